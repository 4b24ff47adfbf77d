"""Two one-shot extractions at once (`python -m extractor once` twice, as two operators or a Job and a person):
exactly one run, nothing twice, and the second says why it did not run; SIGTERM while it waits stops it at once."""

import time

from tests.faults.conftest import assert_exact, wait_for
from tests.faults.test_sigterm import term


def test_two_one_shot_extractions_at_once_make_one_run(make_source, make_pipeline):
    """The second meets AlreadyRunning; its lease wait is for a dead holder (docs/errors.md: a request met by
    AlreadyRunning is dropped), so it must not start a second run of the same data once the first has finished."""
    p = make_pipeline(make_source(count=200), ETL_PAGE_SIZE="10", ETL_LOCK_TTL_S="30", ETL_RAW_BACKLOG_MAX_PAGES="1")
    first = p.start("extractor", "once", tag="first")  # no transformer yet: it holds the run in backpressure
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) >= 2, what="two pages handed on")
    second = p.start("extractor", "once", tag="second")  # started while the first's run is in progress
    time.sleep(2)
    assert second.popen.poll() is None or "already" in second.output().lower(), second.output()[-2000:]
    p.start_workers()  # the first's run goes on and ends well inside the second's wait (30 s + 1 s)
    codes = [first.popen.wait(120), second.popen.wait(120)]
    run = p.wait_run(timeout_s=120)
    assert_exact(p, run, list(range(1, 201)), page_size=10)
    with p.db() as db:
        assert db.execute("SELECT count(*) FROM etl_runs").fetchone()[0] == 1, p.logs()
    assert codes[0] == 0, first.output()[-2000:]
    # The second neither ran a second time nor failed silently: it says another extraction held the run.
    assert codes[1] != 0 or "already" in second.output().lower(), second.output()[-2000:]


def test_a_one_shot_extraction_waiting_for_the_lock_stops_at_once_on_sigterm(make_source, make_pipeline):
    """`once` waits out another's lease (ETL_LOCK_TTL_S + 1 s, here 61 s): SIGTERM must end that wait, as it ends
    the serving extractor's (test_extractor_service), well before Kubernetes' 30 s kill."""
    p = make_pipeline(make_source(count=200), ETL_PAGE_SIZE="10", ETL_LOCK_TTL_S="60", ETL_RAW_BACKLOG_MAX_PAGES="1")
    holder = p.start("extractor", "once")  # no transformer: it holds the lock in backpressure
    wait_for(lambda: p.redis.xlen(p.keys.raw_stream) >= 2, what="two pages handed on")
    waiter = p.start("extractor", "once", tag="waiter")
    time.sleep(2)
    assert waiter.popen.poll() is None, waiter.output()[-2000:]
    try:
        term(waiter)  # fails when still running GRACE_S after SIGTERM
        assert "run started" not in waiter.output() and "run resumed" not in waiter.output()
        assert holder.popen.poll() is None and p.redis.exists(p.keys.extract_lock)
    finally:
        term(holder)
