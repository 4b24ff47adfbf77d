"""Store and upload faults on real parts: a full volume, SFTP without posix-rename, known_hosts cut or revoked."""

import base64
import json
import os
import subprocess
import time
from pathlib import Path

import httpx
import orjson
import pytest

import testbed as tb
from dummyjson.users import make_user
from saver import sftp
from saver.settings import SaverSettings
from tests.faults.conftest import assert_exact, loaded_pages, wait_for
from tests.faults.test_known_hosts import _server_keys, _wait_error
from tests.support import Pipeline


def _leftovers(*dirs: Path) -> list[Path]:
    """Temporary files (``.part``, ``.stream.part``, ``.loading``) under ``dirs``: none may outlive a run."""
    return [f for d in dirs for pattern in ("*.part", "*.loading") for f in d.rglob(pattern)]


def _no_stale_state(p) -> None:
    """Nothing of the run is left in Redis: no extraction lock, no checkpoint of a run in progress."""
    assert not p.redis.exists(p.keys.extract_lock)
    assert not p.checkpoint().get("run_id"), p.checkpoint()


@pytest.fixture
def small_volume(tmp_path):
    """A 24 MiB tmpfs for the database and the run files, unmounted at the end (root only)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; run as root to exercise a full volume")
    mount = tmp_path / "vol"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    yield mount
    if subprocess.run(["umount", str(mount)]).returncode != 0:
        subprocess.run(["umount", "-l", str(mount)], check=True)  # a process still holds a file: detach it


def _free_bytes(path: Path) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


def _readyz(port: int) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)


def test_a_full_database_volume_holds_the_run_until_space_is_freed_then_it_ends_exact(
    small_volume, make_source, make_pipeline
):
    src = make_source(count=600)
    p = make_pipeline(src, ETL_PAGE_SIZE="50", ETL_STORAGE_RETRY_S="0.5", ETL_STORAGE_RETRY_MAX_S="1")
    p.db_path, p.data_dir = small_volume / "database" / "data.db", small_volume / "data"
    ops = tb.free_port()
    p.start("saver", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    p.start("transformer")
    wait_for(lambda: p.db_path.exists() and _readyz(ops).status_code == 200, what="saver ready")
    # Room for a few pages only: the load runs out of space mid-run.
    ballast = small_volume / "ballast"
    ballast.write_bytes(b"\0" * (_free_bytes(small_volume) - (1 << 20)))
    assert p.extract().returncode == 0

    ready = wait_for(lambda: (r := _readyz(ops)).status_code == 503 and r, what="/readyz saying why", timeout_s=60)
    reason = ready.json()["reason"]
    assert reason.startswith("save: no space left on the volume of ") and str(small_volume) in reason
    assert "Free space on that volume" in reason and "ETL_STORAGE_RETRY_S" in reason
    metrics = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=2).text
    assert "etl_saver_storage_full 1.0" in metrics
    # The run's error is written just after /readyz turns, even with no room left for one WAL frame: into the space
    # of the storage reserve the saver gives back, and holds again at once so that no page loads into it.
    run = wait_for(lambda: (r := p.runs()[-1])["error"] and r, timeout_s=10, what="the run's error")
    assert run["status"] in ("running", "extracted", "transformed"), dict(run)
    assert run["error"].split(" every ")[0] == reason.split(" every ")[0]  # the delay grows between tries
    assert p.procs["saver"].alive(), p.logs()
    assert "Traceback" not in p.procs["saver"].output()
    held = p.redis.xlen(p.keys.processed_stream)
    assert held > 0  # the pages not committed wait in Redis, not acked
    reserve = p.db_path.with_name(p.db_path.name + "-reserve")
    assert reserve.stat().st_size < 1 << 20 and _free_bytes(small_volume) < 64 << 10

    ballast.unlink()
    run = p.wait_run(("succeeded", "failed", "upload_pending"), timeout_s=90)
    assert run["error"] is None, dict(run)
    assert_exact(p, run, list(range(1, 601)), page_size=50)
    assert _readyz(ops).status_code == 200
    assert "etl_saver_storage_full 0.0" in httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=2).text
    assert not _leftovers(p.data_dir, p.upload_dir)
    assert p.redis.xlen(p.keys.processed_stream) == 0
    assert reserve.stat().st_size == 1 << 20  # held whole again once there was room
    _no_stale_state(p)
    p.stop_all()


def test_a_full_data_volume_at_the_files_step_holds_the_run_loaded_then_it_ends_exact(
    small_volume, make_source, make_pipeline
):
    """The database has room, the run files' volume has not: the files wait, the run shows why, then succeeds."""
    src = make_source(count=250)
    p = make_pipeline(src, ETL_STORAGE_RETRY_S="0.5", ETL_STORAGE_RETRY_MAX_S="1")
    p.data_dir = small_volume / "data"
    ops = tb.free_port()
    p.start("saver", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    p.start("transformer")
    ballast = small_volume / "ballast"
    ballast.write_bytes(b"\0" * (_free_bytes(small_volume) - (64 << 10)))
    assert p.extract().returncode == 0

    run = wait_for(
        lambda: (r := p.runs()) and (r[-1]["error"] or "").startswith("save: no space left") and r[-1],
        timeout_s=60,
        what="the run showing the full volume",
    )
    assert run["status"] == "loaded", dict(run)
    assert f"on the volume of {p.data_dir}" in run["error"] and "No space left on device" in run["error"]
    assert _readyz(ops).json()["reason"].split(" every ")[0] == run["error"].split(" every ")[0]
    assert (p.count("raw_users", run["run_id"]), p.count("processed_users", run["run_id"])) == (250, 250)
    assert not list(p.data_dir.rglob("*.part"))  # a half-written file is removed at once
    assert p.procs["saver"].alive()

    ballast.unlink()
    run = p.wait_run(("succeeded", "failed", "upload_pending"), timeout_s=60)
    assert run["error"] is None, dict(run)
    assert_exact(p, run, list(range(1, 251)))
    assert not _leftovers(p.data_dir, p.upload_dir)
    _no_stale_state(p)
    p.stop_all()


@pytest.fixture
def no_posix_rename(tmp_path):
    """An OpenSSH SFTP server that refuses the posix-rename extension (``internal-sftp -P posix-rename``)."""
    server = tb.start_sftp(
        tmp_path / "sshd-np", tmp_path / "keys-np", tmp_path / "upload-np", denied_requests="posix-rename"
    )
    yield server
    server.stop()


def test_a_server_without_posix_rename_gets_a_plain_rename_and_the_run_succeeds(
    make_source, make_pipeline, no_posix_rename
):
    src = make_source(count=250)
    p = make_pipeline(src, upload_dir=no_posix_rename.upload_dir)
    p.sftp_env.update(no_posix_rename.env())
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run(("succeeded", "failed", "upload_pending"))
    assert run["error"] is None, dict(run)
    assert_exact(p, run, list(range(1, 251)))
    assert not _leftovers(p.data_dir, no_posix_rename.upload_dir)
    assert "refused posix-rename; used a plain rename" in p.procs["saver"].output()


def test_the_whole_file_upload_replaces_an_existing_target_without_posix_rename(tmp_path, no_posix_rename):
    """A plain SFTP rename fails on an existing target: the target is removed first, then renamed over."""
    local = tmp_path / "local"
    local.mkdir()
    files = {}
    for kind in ("raw", "processed", "dlq"):
        (local / f"{kind}.jsonl").write_bytes(b'{"id": 1}\n' * (100 if kind == "raw" else 3))
        files[kind] = (local / f"{kind}.jsonl", f"sub/{kind}.jsonl")
    remote = no_posix_rename.upload_dir
    (remote / "sub").mkdir()
    (remote / "sub" / "raw.jsonl").write_bytes(b"an older upload of the same name\n")
    (remote / "sub" / "dlq.jsonl.stream.part").write_bytes(b"left by a stream given up on\n")
    settings = SaverSettings(
        **{k.removeprefix("ETL_").lower(): v for k, v in no_posix_rename.env().items()}, sftp_attempts=1
    )
    out = sftp.upload(settings, files)
    assert out == {kind: str(remote / name) for kind, (_, name) in files.items()}
    for kind, (path, name) in files.items():
        assert (remote / name).read_bytes() == path.read_bytes()
    assert not _leftovers(remote)


def _run_pinned_by(known: Path, text: str, make_source, make_pipeline) -> Pipeline:
    """A run of 30 users whose upload trusts the known_hosts ``text`` (written to ``known``)."""
    known.write_text(text)
    p = make_pipeline(make_source(count=30), ETL_SFTP_KNOWN_HOSTS=str(known))
    p.start_workers()
    assert p.extract().returncode == 0
    return p


def test_a_known_hosts_key_cut_at_a_base64_boundary_is_skipped_not_taken_for_an_attack(
    tmp_path, make_source, make_pipeline, sftp_server
):
    keys = _server_keys(sftp_server)
    host = f"[127.0.0.1]:{sftp_server.port}"
    key_type, blob = keys["ed25519"].split()
    cut = blob[: len(blob) // 8 * 4]  # decodes as base64, but is half a key
    base64.b64decode(cut, validate=True)
    known = tmp_path / "known_hosts"
    p = _run_pinned_by(known, f"{host} {key_type} {cut}\n", make_source, make_pipeline)
    run = _wait_error(p, f"known_hosts {known} has no usable host key (line 1: unreadable key")
    assert "does not match" not in run["error"] and "someone in between" not in run["error"]
    assert "cut short" in run["error"]
    log = p.procs["saver"].output()
    assert "known_hosts line skipped" in log and "cut short" in log
    # The whole line restored: the next try uploads, without a restart.
    known.write_text(f"{host} {keys['ed25519']}\n")
    run = p.wait_run()
    assert (run["status"], run["error"]) == ("succeeded", None)
    assert (p.count("raw_users", run["run_id"]), p.count("processed_users", run["run_id"])) == (30, 30)
    assert not _leftovers(p.data_dir, p.upload_dir)


def test_a_host_whose_only_keys_are_revoked_is_refused_as_marked_revoked(
    tmp_path, make_source, make_pipeline, sftp_server
):
    keys = _server_keys(sftp_server)
    host = f"[127.0.0.1]:{sftp_server.port}"
    revoked = "".join(f"@revoked * {keys[k]}\n" for k in ("ed25519", "rsa"))
    text = f"{revoked}{host} {keys['ed25519']}\n{host} {keys['rsa']}\n"
    p = _run_pinned_by(tmp_path / "known_hosts", text, make_source, make_pipeline)
    run = _wait_error(p, "is marked @revoked in known_hosts")
    assert "no host key lines" not in run["error"]
    assert (p.count("raw_users", run["run_id"]), run["valid_count"]) == (30, 30)
    assert not list(p.upload_dir.rglob("*.jsonl")) and not _leftovers(p.data_dir, p.upload_dir)
    assert p.procs["saver"].alive()


def test_a_saver_killed_mid_stream_leaves_no_stream_part_beside_the_whole_files(slow_source, make_pipeline):
    """The files streamed as pages commit are given up on by the kill; the whole-file upload removes them."""
    src = slow_source(delay_s=0.2)
    p = make_pipeline(src, ETL_PAGE_SIZE="50")
    p.start_workers()
    extractor = p.start("extractor", "once")
    wait_for(lambda: list(p.upload_dir.rglob("*.stream.part")), what="a streamed file on the server")
    p.procs["saver"].kill9()
    assert extractor.popen.wait(60) == 0
    p.start("saver")
    run = p.wait_run(("succeeded", "failed", "upload_pending"), timeout_s=90)
    assert_exact(p, run, list(range(1, 601)), page_size=50)
    assert not _leftovers(p.data_dir, p.upload_dir)
    _no_stale_state(p)


@pytest.fixture
def volatile_redis(tmp_path):
    """A redis-server without persistence (no AOF, no snapshots): a restart comes back empty."""
    server = tb.start_redis(tmp_path / "redis-volatile", aof=False)
    yield server
    server.proc.stop()


def _pipeline(tmp_path, redis_url: str, sftp_server, source, **extra: str) -> Pipeline:
    upload = tmp_path / "upload-w"
    upload.mkdir()
    p = Pipeline(
        tmp_path / "pw", redis_url, {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(upload)}, source.url, extra
    )
    p.upload_dir = upload
    return p


def _status(p: Pipeline, status: str, timeout_s: float = 60):
    return wait_for(lambda: (r := p.runs()) and r[-1]["status"] == status and r[-1], timeout_s, f"run {status}")


def test_pages_lost_with_a_redis_restarted_empty_fail_the_run_with_the_pages_and_the_next_step(
    tmp_path, volatile_redis, sftp_server, slow_source
):
    src = slow_source(count=600, delay_s=0.3)
    p = _pipeline(tmp_path, volatile_redis.url, sftp_server, src, ETL_WATCHDOG_INTERVAL_S="0.5")
    try:
        p.start_workers()
        extractor = p.start("extractor", "once")
        wait_for(lambda: loaded_pages(p) >= 2, what="2 pages loaded")
        p.procs["transformer"].stop()  # the other pages wait in transit
        assert extractor.popen.wait(60) == 0, extractor.output()[-2000:]
        _status(p, "extracted")
        loaded = loaded_pages(p)
        assert loaded < 6
        volatile_redis.restart()  # comes back empty: the pages in transit are gone
        p.start("transformer")
        run = p.wait_run(("failed", "succeeded"), timeout_s=30)
        assert run["status"] == "failed", dict(run)
        assert run["error"].startswith(f"watchdog: pages lost in transit: {6 - loaded} of the 6 pages"), run["error"]
        assert "Redis restarted without persistence" in run["error"] and "start a new run" in run["error"]
        missing = ", ".join(str(n) for n in range(6) if n >= loaded)
        assert f"(pages {missing})" in run["error"]
        rid = run["run_id"]
        assert (p.count("raw_users", rid), p.count("processed_users", rid)) == (loaded * 100, loaded * 100)
        assert p.procs["saver"].alive()
        # The streamed remote files of the failed run are removed by the stream's thread, shortly after.
        wait_for(lambda: not _leftovers(p.data_dir, p.upload_dir), timeout_s=10, what="no temporary file left")
        assert not list(p.upload_dir.rglob("*.jsonl"))
        _no_stale_state(p)
    finally:
        p.stop_all()


def _stalled_by_a_dead_transformer(make_source, make_pipeline):
    """A run of 600 users the watchdog failed: no transformer ran; the pipeline and the run."""
    p = make_pipeline(make_source(count=600), ETL_RUN_STALL_TIMEOUT_S="3", ETL_WATCHDOG_INTERVAL_S="0.5")
    p.start("saver")  # no transformer: it "died" before the run
    assert p.extract().returncode == 0
    run = p.wait_run(("failed", "succeeded"), timeout_s=30)
    assert run["status"] == "failed", dict(run)
    return p, run


def test_a_dead_transformer_stalls_the_run_and_the_watchdog_names_it(make_source, make_pipeline):
    p, run = _stalled_by_a_dead_transformer(make_source, make_pipeline)
    assert run["error"].startswith("watchdog: no progress for over 3 s (ETL_RUN_STALL_TIMEOUT_S) since ")
    assert f"stalled at the transformer: 6 pages of the run wait in {p.keys.raw_stream}" in run["error"]
    assert p.count("raw_users", run["run_id"]) == 0
    assert not _leftovers(p.data_dir, p.upload_dir)
    _no_stale_state(p)


def test_a_run_the_watchdog_failed_for_a_dead_transformer_completes_once_one_comes_back(make_source, make_pipeline):
    """Progress after the verdict of no progress wins: the pages that waited are loaded and the run succeeds, exact."""
    p, failed = _stalled_by_a_dead_transformer(make_source, make_pipeline)
    assert "stalled at the transformer" in failed["error"]
    p.start("transformer")  # it comes back: the 6 pages that waited in the raw stream move on
    run = p.wait_run(("succeeded",), timeout_s=60, run_id=failed["run_id"])
    assert run["error"] is None
    assert_exact(p, run, list(range(1, 601)))
    assert not _leftovers(p.data_dir, p.upload_dir)
    _no_stale_state(p)


def test_a_saver_restarted_after_the_extractor_died_loads_what_waited_then_fails_the_stalled_run(
    slow_source, make_pipeline
):
    src = slow_source(count=600, delay_s=0.3)
    p = make_pipeline(src, ETL_RUN_STALL_TIMEOUT_S="4", ETL_WATCHDOG_INTERVAL_S="0.5", ETL_LOCK_TTL_S="2")
    p.start_workers()
    extractor = p.start("extractor", "once")
    wait_for(lambda: loaded_pages(p) >= 1, what="a page loaded")
    p.procs["saver"].kill9()  # the saver dies first ...
    wait_for(lambda: p.redis.xlen(p.keys.processed_stream) >= 1, what="a page waiting for the saver")
    extractor.kill9()  # ... then the extractor: nobody owns the run
    time.sleep(6)  # longer than the stall timeout: the run's last progress is old when the saver comes back
    waiting = {orjson.loads(f[b"data"])["page"] for _, f in p.redis.xrange(p.keys.processed_stream)}
    with p.db() as db:
        handed_on = waiting | {r[0] for r in db.execute("SELECT page FROM loaded_pages")}
    p.start("saver")
    run = p.wait_run(("failed", "succeeded"), timeout_s=30)
    assert run["status"] == "failed", dict(run)
    assert p.redis.xlen(p.keys.processed_stream) == 0
    assert loaded_pages(p) == len(handed_on)  # what waited for the saver was loaded before the run was judged
    assert "stalled at the extractor: no extractor holds the run's lock" in run["error"], run["error"]
    assert "since 20" in run["error"] and "(status running)" in run["error"]
    assert p.count("raw_users", run["run_id"]) == loaded_pages(p) * 100
    assert not p.redis.exists(p.keys.extract_lock)
    assert not _leftovers(p.data_dir, p.upload_dir)


def test_duplicate_user_ids_in_a_run_are_a_warning_and_a_metric_whatever_the_cause(make_source, make_pipeline):
    """Users 201-225 reuse the ids 1-25 (other people) on a page that also has new ids: no page repeats another
    (which the extractor fails at once), the store-side check sees the duplicates."""
    reused = [{**make_user(i, seed=7), "id": i} for i in range(1, 26)]
    users = [make_user(i) for i in range(1, 201)] + reused + [make_user(i) for i in range(226, 251)]
    src = make_source(users=users)
    p = make_pipeline(src)
    ops = tb.free_port()
    p.start("saver", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    p.start("transformer")
    assert p.extract().returncode == 0
    run = p.wait_run(("succeeded", "failed", "upload_pending"))
    assert (run["status"], run["error"]) == ("succeeded", None)
    warnings = [w for w in json.loads(run["warnings"] or "[]") if w.startswith("duplicate user ids")]
    assert warnings == [
        "duplicate user ids: 25 ids appear on 50 raw rows of the run (e.g. 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, ...); "
        "the source may ignore skip, overlap its pages or repeat users: this run's data may be wrong, compare it "
        "with the source before using it"
    ]
    rid = run["run_id"]
    assert (p.count("raw_users", rid), p.count("processed_users", rid) + p.count("invalid_users", rid)) == (250, 250)
    metrics = httpx.get(f"http://127.0.0.1:{ops}/metrics", timeout=2).text
    assert 'etl_run_invariant_violations_total{check="duplicate_user_ids"} 1.0' in metrics
    assert not _leftovers(p.data_dir, p.upload_dir)
    _no_stale_state(p)
