"""testbed.Stack, the one assembler of the tests', the demo's and the benchmarks' stack: up, a run, all stopped."""

import socket
from pathlib import Path

import httpx
import pytest

import testbed as tb
from tests.faults.conftest import wait_for


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_a_stack_starts_every_part_in_order_performs_a_run_and_stops_everything(tmp_path):
    api_port = tb.free_port()
    settings = {"ETL_API_TOKEN": "t", "ETL_API_AUTH": "token", "ETL_BLOCK_MS": "200", "ETL_SCHEDULE": "0 3 1 1 *"}
    stack = tb.Stack(
        tmp_path,
        services=tb.stack.SERVICES,
        settings=settings,
        ports={"api": api_port},
        source_args=["--count", "250", "--bad-every", "10"],
    )
    with stack:
        assert list(stack.procs) == ["redis", "sshd", "source", "transformer", "saver", "api", "extractor"]
        # Every worker is past its start (groups made) and the API answers: a run asked for now is served.
        for name in ("transformer", "saver", "extractor"):
            assert f"{name} ready" in stack.procs[name].output()
        auth = {"Authorization": "Bearer t"}
        httpx.post(f"http://127.0.0.1:{api_port}/etl_runs", headers=auth, timeout=10).raise_for_status()
        run = tb.wait_for_run(stack.db_path, ("succeeded",), timeout_s=90, logs=stack.logs)
        assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (250, 225, 25)
        for name in (run["raw_file"], run["processed_file"], run["dlq_file"]):
            assert (stack.sftp.upload_dir / name).is_file(), name  # uploaded to the stack's own SFTP server
        redis_port, sftp_port = stack.redis.port, stack.sftp.port
    assert all(not p.alive() for p in stack.procs.values()), stack.logs()
    assert not any(_listening(port) for port in (api_port, redis_port, sftp_port))


def test_a_service_that_exits_at_start_is_named_with_its_last_words_and_the_rest_is_stopped(tmp_path):
    stack = tb.Stack(tmp_path, services=("transformer", "saver"), settings={"ETL_ENCRYPTION_ENABLED": "true"})
    with pytest.raises(RuntimeError, match=r"saver exited at start: .*ETL_ENCRYPTION_RECIPIENTS"):
        with stack:
            pass
    # Only what these services need was started (no source without the extractor), and all of it is stopped.
    assert list(stack.procs) == ["redis", "sshd", "transformer", "saver"]
    assert all(not p.alive() for p in stack.procs.values())


def test_a_service_the_stack_does_not_have_is_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown service"):
        tb.Stack(tmp_path, services=("loader",))


def test_stopping_a_process_stops_what_it_started_in_its_group(tmp_path):
    proc = tb.spawn("shell", ["sh", "-c", "sleep 300 & echo $! > child.pid; wait"], tmp_path, cwd=tmp_path)
    pid_file = tmp_path / "child.pid"
    while not pid_file.exists() or not pid_file.read_text().strip():
        assert proc.alive(), proc.output()
    child = int(pid_file.read_text())
    proc.stop()
    wait_for(lambda: _state(child) in ("gone", "Z"), timeout_s=5, what=f"the shell's child {child} to die")


def _state(pid: int) -> str:
    """The process's state letter (Z: a zombie, dead), or "gone"."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return "gone"


@pytest.mark.slow
def test_redis_is_started_once_it_has_loaded_its_data_not_once_it_listens(tmp_path):
    """A large AOF takes Redis seconds to load, listening all along and answering LOADING meanwhile."""
    import redis

    server = tb.start_redis(tmp_path / "redis", aof=True)
    keys = 2_000_000
    try:
        client = redis.Redis.from_url(server.url)
        fill = "for i = tonumber(ARGV[1]), tonumber(ARGV[2]) do redis.call('SET', 'k' .. i, i) end"
        for start in range(1, keys, 100_000):  # in steps: a long script blocks every other client
            client.eval(fill, 0, start, start + 99_999)
        client.close()
        server.proc.stop()
        again = tb.start_redis(tmp_path / "redis", aof=True)
        server = again
        client = redis.Redis.from_url(again.url)
        assert client.dbsize() == keys  # BusyLoadingError had it been handed over while loading
        client.close()
    finally:
        server.proc.stop()
