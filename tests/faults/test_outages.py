"""Dependencies going away mid-run (Redis, SFTP, the source) heal without losing or doubling a record."""

import time

import testbed as tb
from tests.faults.conftest import assert_exact, transformed_pages, wait_for

PAGE = {"ETL_PAGE_SIZE": "50"}
IDS = list(range(1, 601))


def test_redis_restarted_mid_run(slow_source, make_pipeline, redis_server, stopwatch):
    src = slow_source(delay_s=0.3)
    p = make_pipeline(src, **PAGE)
    p.start_workers()
    extractor = p.start("extractor", "once")
    wait_for(lambda: transformed_pages(p) >= 3, what="3 pages transformed")
    stopwatch.fault()
    redis_server.restart(down_s=1.0)
    assert extractor.popen.wait(90) == 0, extractor.output()[-2000:]
    run = p.wait_run(timeout_s=90)
    stopwatch.recovered()
    assert_exact(p, run, IDS, page_size=50)
    assert all(proc.alive() for proc in p.procs.values() if proc.name != "extractor-once")


def test_sftp_down_before_upload_then_back_20s_later(make_source, make_pipeline, tmp_path, stopwatch):
    sftp = tb.start_sftp(tmp_path / "sshd", tmp_path / "keys", tmp_path / "upload")
    src = make_source(count=250)
    p = make_pipeline(src, upload_dir=sftp.upload_dir)
    p.sftp_env.update(sftp.env())
    sftp.stop()
    stopwatch.fault()
    p.start_workers()
    assert p.extract().returncode == 0
    pending = p.wait_run(("upload_pending",))
    assert "unreachable" in pending["error"]
    with p.db() as db:
        assert db.execute("SELECT count(*) FROM processed_users").fetchone()[0] == 250  # the load stands
    time.sleep(20)
    sftp.start()
    try:
        run = p.wait_run(("succeeded",), timeout_s=30)
        stopwatch.recovered()
        assert run["error"] is None
        assert_exact(p, run, list(range(1, 251)))
    finally:
        sftp.stop()


def test_source_503_three_times_then_200(make_source, make_pipeline, stopwatch):
    src = make_source(count=250)
    src.faults([{"skip": 100, "status": 503, "times": 3}])
    p = make_pipeline(src)
    p.start_workers()
    assert p.extract().returncode == 0
    # Pages after the first are fetched several at once (ETL_FETCH_CONCURRENCY): counted, not ordered.
    assert sorted(r["skip"] for r in src.requests()) == [0, 100, 100, 100, 100, 200]
    run = p.wait_run()
    stopwatch.recovered()
    assert_exact(p, run, list(range(1, 251)))


def test_source_429_with_retry_after_timeouts_and_a_page_that_is_not_json(make_source, make_pipeline, stopwatch):
    src = make_source(count=250)
    src.faults(
        [
            {"skip": 0, "status": 429, "times": 1, "retry_after": 1},
            {"skip": 100, "delay_s": 2, "status": 200, "times": 1},
            {"skip": 200, "body": "notjson", "status": 200, "times": 1},
        ]
    )
    p = make_pipeline(src, ETL_REQUEST_TIMEOUT_S="0.5")
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout
    reqs = src.requests()
    assert sorted(r["skip"] for r in reqs) == [0, 0, 100, 100, 200, 200]
    assert reqs[1]["at"] - reqs[0]["at"] >= 0.95
    assert "ReadTimeout" in done.stdout and "is not JSON" in done.stdout
    run = p.wait_run()
    stopwatch.recovered()
    assert_exact(p, run, list(range(1, 251)))


def test_total_changing_between_pages_is_followed(make_source, make_pipeline, stopwatch):
    src = make_source(count=250)
    # After the first request the source claims 50 users fewer: the run stops at the new total.
    src.faults([], total_delta=-50, total_delta_after=1)
    p = make_pipeline(src)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0
    assert "source total changed during the run" in done.stdout
    # The page at 200 may have been asked for ahead (concurrent fetches), never handed on: 200 users below.
    assert sorted(r["skip"] for r in src.requests())[:2] == [0, 100]
    run = p.wait_run()
    stopwatch.recovered()
    assert_exact(p, run, list(range(1, 201)))


def test_source_gone_for_good_fails_keeps_checkpoint_then_resumes(make_source, make_pipeline, stopwatch):
    src = make_source(count=250)
    p = make_pipeline(src)
    p.start_workers()
    src.faults([{"skip": 200, "status": 503, "times": -1}])
    first = p.extract()
    assert first.returncode == 1
    cp = p.checkpoint()
    assert cp["next_skip"] == "200"
    stopwatch.fault()
    src.stop()  # gone: connection refused from now on
    gone = p.extract()
    assert gone.returncode == 1 and "ConnectError" in gone.stdout
    assert p.checkpoint() == cp, "checkpoint moved while the source was gone"
    failed = p.wait_run(("failed",))
    assert "skip=200" in failed["error"]
    src.source.rules.clear()
    src.start()  # back on the same port
    resumed = p.extract()
    assert resumed.returncode == 0, resumed.stdout
    run = p.wait_run()
    stopwatch.recovered()
    assert run["run_id"] == cp["run_id"]
    assert [r["skip"] for r in src.requests()].count(0) == 1
    assert_exact(p, run, list(range(1, 251)))
