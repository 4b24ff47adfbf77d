"""SIGTERM ends every service within 10 s in every state (Redis down, retry sleeps, backpressure, SFTP
retries), as Kubernetes expects before its 30 s kill, and the run then completes with nothing lost."""

import signal

import pytest

import testbed as tb
from tests.faults.conftest import assert_exact, wait_for

# The contract (Kubernetes sends SIGKILL at 30 s); the waits below are minutes long, so only a cut-short wait meets it.
GRACE_S = 10


def term(proc: tb.Proc) -> int:
    """SIGTERM, then the exit code; fails when the process is still running after GRACE_S."""
    proc.popen.send_signal(signal.SIGTERM)
    try:
        return proc.popen.wait(GRACE_S)
    except Exception:
        proc.kill9()
        raise AssertionError(f"{proc.name} still running {GRACE_S}s after SIGTERM:\n{proc.output()[-2000:]}") from None


def logged(proc: tb.Proc, text: str) -> bool:
    return text in proc.output()


def test_workers_stop_during_a_redis_outage(tmp_path, make_source, make_pipeline):
    """Redis goes away under the three workers; each is inside its outage retries when SIGTERM comes."""
    own = tb.start_redis(tmp_path / "redis")
    try:
        p = make_pipeline(make_source(count=10))
        p.redis_url = own.url
        workers = [p.start("transformer"), p.start("saver"), p.start("extractor")]
        for w in workers:
            wait_for(lambda w=w: logged(w, " ready"), timeout_s=30, what=f"{w.name} ready")
        own.proc.kill9()
        for w in workers:
            wait_for(lambda w=w: logged(w, "redis unavailable"), timeout_s=60, what=f"{w.name} in the outage")
        for w in workers:
            assert term(w) == 0, w.output()[-2000:]
    finally:
        own.proc.stop()


def test_worker_stops_while_waiting_for_redis_at_start(tmp_path, make_source, make_pipeline):
    p = make_pipeline(make_source(count=10))
    p.redis_url = f"redis://127.0.0.1:{tb.free_port()}/0"  # nothing listens there
    saver = p.start("saver")
    wait_for(lambda: logged(saver, "waiting for redis"), timeout_s=60, what="the saver waiting for redis")
    assert term(saver) == 0


def test_extractor_stops_during_backpressure_and_the_run_resumes(make_source, make_pipeline):
    src = make_source(count=200)
    p = make_pipeline(src, ETL_PAGE_SIZE="10", ETL_RAW_BACKLOG_MAX_PAGES="1")
    extractor = p.start("extractor", "once")  # no transformer: the backlog stays full
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) >= 2, what="two pages handed on")
    assert term(extractor) == 1  # once: the run did not finish
    assert p.checkpoint()["next_skip"] == "20"  # the checkpoint keeps the place
    p.start_workers()
    assert p.extract().returncode == 0
    assert_exact(p, p.wait_run(), list(range(1, 201)), page_size=10)


def test_extractor_stops_during_a_source_retry_sleep(make_source, make_pipeline):
    src = make_source(count=250)
    src.faults([{"skip": 100, "status": 503, "times": -1}])
    p = make_pipeline(src, ETL_RETRY_DELAYS="600,600")
    p.start_workers()
    extractor = p.start("extractor", "once")
    wait_for(lambda: logged(extractor, "source request failed, retrying"), what="the first retry wait")
    assert term(extractor) == 1
    assert p.checkpoint()["next_skip"] == "100"
    src.faults([])
    assert p.extract(ETL_RETRY_DELAYS="0.05").returncode == 0
    assert_exact(p, p.wait_run(), list(range(1, 251)))


@pytest.mark.slow
def test_saver_stops_during_sftp_retries_and_uploads_after_restart(tmp_path, make_source, make_pipeline):
    sftp = tb.start_sftp(tmp_path / "sshd", tmp_path / "keys", tmp_path / "upload")
    try:
        p = make_pipeline(make_source(count=150), upload_dir=sftp.upload_dir)
        p.sftp_env.update(sftp.env())
        sftp.stop()
        saver = p.start("saver", ETL_SFTP_ATTEMPTS="5", ETL_SFTP_BACKOFF_S="600")
        p.start("transformer")
        assert p.extract().returncode == 0
        wait_for(lambda: logged(saver, "sftp upload failed, retrying"), timeout_s=60, what="an SFTP retry wait")
        assert term(saver) == 0
        assert p.runs()[-1]["status"] in ("loaded", "upload_pending")
        sftp.start()
        p.start("saver", tag="saver-again")
        assert_exact(p, p.wait_run(), list(range(1, 151)))
    finally:
        sftp.stop()
