"""The extractor service: daily schedule, run-now commands, one run at a time across replicas."""

import signal
import time

import pytest

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


# Where SIGTERM finds a run: waiting on backpressure, inside a slow page request, in a retry sleep.
STOP_POINTS = {
    "backpressure": ({"ETL_RAW_BACKLOG_MAX_PAGES": "1"}, []),
    "slow page": ({}, [{"skip": 20, "delay_s": 3, "times": 1}]),
    "retry sleep": ({"ETL_RETRY_DELAYS": "600"}, [{"skip": 20, "status": 503, "times": 1}]),
}


@pytest.mark.parametrize("where", list(STOP_POINTS))
@pytest.mark.parametrize("command", [(), ("once",)])
def test_a_stopped_extractor_frees_the_run_lock_and_the_next_resumes_at_once(
    make_source, make_pipeline, command, where
):
    """SIGTERM mid-run: the lock is released (not left to its 60 s lease), and the next extractor resumes the run."""
    settings, faults = STOP_POINTS[where]
    src = make_source(count=200)
    src.faults(faults)
    p = make_pipeline(src, ETL_PAGE_SIZE="10", ETL_LOCK_TTL_S="60", **settings)
    first = p.start("extractor", *command, ETL_RUN_ON_START="true")  # no transformer yet: the backlog stays
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) >= 2, what="two pages handed on")
    assert p.redis.exists(p.keys.extract_lock)
    first.popen.send_signal(signal.SIGTERM)
    first.popen.wait(30)
    assert not p.redis.exists(p.keys.extract_lock), first.output()[-2000:]
    run_id = p.checkpoint()["run_id"]
    src.faults([])
    p.start_workers()
    nxt = p.start("extractor", tag="next")
    run = p.wait_run(timeout_s=120)
    assert run["run_id"] == run_id and run["valid_count"] == 200
    assert "run lock had already expired" not in first.output() + nxt.output()


def test_an_extractor_waiting_out_a_lease_stops_at_once_on_sigterm(make_source, make_pipeline):
    """A serving extractor waiting for another's run lock (60 s lease) honours SIGTERM without waiting it out."""
    p = make_pipeline(make_source(count=200), ETL_PAGE_SIZE="10", ETL_LOCK_TTL_S="60", ETL_RAW_BACKLOG_MAX_PAGES="1")
    holder = p.start("extractor", "once")  # no transformer: it holds the lock in backpressure
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) >= 2, what="two pages handed on")
    waiter = p.start("extractor", tag="waiter")  # finds the checkpoint, waits for the lock
    wait_for(lambda: "extractor ready" in waiter.output(), what="the second extractor ready")
    waiter.popen.send_signal(signal.SIGTERM)
    assert waiter.popen.wait(30) == 0, waiter.output()[-2000:]
    assert holder.popen.poll() is None and p.redis.exists(p.keys.extract_lock)  # the lease was not waited out
    assert "run started" not in waiter.output() and "run resumed" not in waiter.output()
