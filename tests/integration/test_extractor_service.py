"""The extractor service: daily schedule, run-now commands, one run at a time across replicas."""

import time

from etl_common import streams
from tests.faults.conftest import wait_for


def test_schedule_fires_a_run(make_source, make_pipeline):
    src = make_source(count=150)
    # croniter's sixth field is seconds: every 2 s, so the test needs no wait for a real day.
    p = make_pipeline(src, ETL_SCHEDULE="* * * * * */2")
    p.start_workers()
    p.start("extractor")
    run = p.wait_run(timeout_s=30)
    assert run["trigger"] == "schedule" and run["valid_count"] == 150


def test_run_now_command_with_two_replicas_makes_exactly_one_run(make_source, make_pipeline):
    src = make_source(count=300)
    src.faults([{"skip": None, "delay_s": 0.3, "status": 200, "times": -1}])
    p = make_pipeline(src)
    p.start_workers()
    p.start("extractor", tag="e1", ETL_CONSUMER_NAME="e1")
    p.start("extractor", tag="e2", ETL_CONSUMER_NAME="e2")
    wait_for(
        lambda: "extractor ready" in p.procs["e1"].output() and "extractor ready" in p.procs["e2"].output(),
        what="both extractors ready",
    )
    for i in range(2):
        p.redis.xadd(
            p.keys.commands_stream,
            streams.encode(
                {"type": "run_now", "request_id": f"r{i}", "trigger": "api", "requested_at_epoch": time.time()}
            ),
        )
    run = p.wait_run(timeout_s=30)
    time.sleep(1.0)
    assert len(p.runs()) == 1
    assert run["trigger"] == "api" and run["valid_count"] == 300
    logs = p.procs["e1"].output() + p.procs["e2"].output()
    assert "a run is already in progress elsewhere" in logs or "already satisfied by a later run" in logs


def test_service_start_resumes_an_unfinished_run(make_source, make_pipeline):
    src = make_source(count=250)
    src.faults([{"skip": 100, "status": 500, "times": -1}])
    p = make_pipeline(src, ETL_LOCK_TTL_S="2")
    p.start_workers()
    assert p.extract().returncode == 1
    run_id = p.checkpoint()["run_id"]
    src.faults([])
    p.start("extractor")
    run = p.wait_run(timeout_s=30)
    assert run["run_id"] == run_id and run["trigger"] == "manual" and run["valid_count"] == 250
