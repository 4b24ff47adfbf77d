"""A run tells the truth about its source and its lease, on real parts: a source that ignores `skip` or overlaps
its pages, a total that runs ahead, a list that grows per request, a lease lost under a slow page, a stop.

Each test asserts the run's final status, its error or warnings, the rows per table and that nothing is left
behind (checkpoint, ids, lock)."""

import json
import signal
import subprocess
import time

import httpx
import pytest

import testbed as tb
from tests.faults.conftest import assert_exact, loaded_pages, wait_for

RESUMABLE_HINT = "run it again to resume"


def warnings_of(run) -> list[str]:
    return json.loads(run["warnings"] or "[]")


def assert_nothing_left(p) -> None:
    """No run in progress is left: no checkpoint, no ids of one, no run lock."""
    assert not p.redis.exists(p.keys.checkpoint), p.checkpoint()
    assert not p.redis.exists(p.keys.checkpoint_ids)
    assert not p.redis.exists(p.keys.extract_lock)


def with_slow_page(make_source, make_pipeline, count: int, skip: int, delay_s: float, switches=None, **settings):
    """A source of ``count`` users whose page at ``skip`` answers after ``delay_s`` once; the pipeline's workers up."""
    src = make_source(count=count)
    src.faults([{"skip": skip, "delay_s": delay_s, "status": 200, "times": 1}], **(switches or {}))
    p = make_pipeline(src, **settings)
    p.start_workers()
    return src, p


def metric(port: int, name: str) -> float:
    for line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " ") or line.startswith(name + "{"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name} not exported")


# --- Kind 1: a source that repeats pages --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("switches", "page_size", "repeated"),
    [
        ({"ignore_skip": True}, 100, "repeats ids 1-100"),  # every page is the first one
        ({"ignore_skip": True}, 40, "repeats ids 1-40"),
        ({"overlap": 50}, 50, "repeats ids 1-50"),  # each page starts one page early: the source never advances
    ],
)
def test_a_source_that_repeats_its_pages_fails_the_run_for_good(
    make_source, make_pipeline, switches, page_size, repeated
):
    src = make_source(count=300)
    src.faults(**switches)
    p = make_pipeline(src, ETL_PAGE_SIZE=str(page_size))
    p.start_workers()
    done = p.extract()
    assert done.returncode == 1, done.stdout + done.stderr
    assert RESUMABLE_HINT not in done.stdout + done.stderr  # nothing to resume: it is over
    run = p.wait_run(("failed",))
    assert "the source ignores skip" in run["error"] and f"page at skip={page_size}" in run["error"], run["error"]
    assert repeated in run["error"] and "ETL_SOURCE_URL" in run["error"]
    # The first page was true and is kept; the repeat was never handed on.
    wait_for(lambda: loaded_pages(p) == 1, what="the first page loaded")
    assert p.count("raw_users", run["run_id"]) == page_size
    assert p.user_ids("processed_users", run["run_id"]) == list(range(1, page_size + 1))
    assert_nothing_left(p)
    # The next run starts afresh (it does not resume the failed one) and, with a sane source, is exact.
    src.faults()
    again = p.extract()
    assert again.returncode == 0, again.stdout + again.stderr
    second = p.wait_run()
    assert second["run_id"] != run["run_id"]
    assert_exact(p, second, list(range(1, 301)), page_size=page_size)
    assert p.runs()[0]["status"] == "failed"  # the failed run stays failed


def test_overlapping_pages_are_loaded_as_sent_and_the_run_says_so(make_source, make_pipeline):
    src = make_source(count=300)
    src.faults(overlap=10)  # each page starts 10 users early: ids 91-100 come twice, 291-300 never
    p = make_pipeline(src)
    ports = {"extractor": tb.free_port()}
    p.start_workers()
    p.start("extractor", ETL_RUN_ON_START="true", ETL_OPS_PORT=str(ports["extractor"]), ETL_OPS_HOST="127.0.0.1")
    run = p.wait_run()
    assert warnings_of(run) == [
        "the source's pages overlap: 10 user ids already fetched in this run came again on pages 1; they are "
        "loaded as sent, so those users have more than one row in this run, and users may be missing where pages "
        "shifted",
        # The saver's own end-of-run check says it too, from the tables, whatever the cause.
        "duplicate user ids: 10 ids appear on 20 raw rows of the run (e.g. 91, 92, 93, 94, 95, 96, 97, 98, 99, 100); "
        "the source may ignore skip, overlap its pages or repeat users: this run's data may be wrong, compare it "
        "with the source before using it",
    ]
    # Every fetched record accounted for once, as the source sent it.
    assert p.user_ids("raw_users", run["run_id"]) == [*range(1, 101), *range(91, 291)]
    assert p.count("processed_users", run["run_id"]) == 300
    assert metric(ports["extractor"], "etl_run_duplicate_ids_total") == 10
    assert_nothing_left(p)


OVERLAP_WARNING = (
    "the source's pages overlap: 10 user ids already fetched in this run came again on pages 1; they are loaded as "
    "sent, so those users have more than one row in this run, and users may be missing where pages shifted"
)


@pytest.mark.parametrize(
    ("switches", "overlap_warnings", "repeated"),
    [
        ({}, [], 0),  # broken ids on every page, nothing repeated: no overlap
        ({"overlap": 10}, [OVERLAP_WARNING], 10),  # ids 91-100 come twice: warned as without broken records
    ],
)
def test_broken_ids_never_make_pages_look_overlapped(make_source, make_pipeline, switches, overlap_warnings, repeated):
    """Every 10th user is broken; users 60, 150 and 240 have the id "abc" (one a page): the transformer rejects
    them with its reason, and only the same valid id on two pages counts as the source's pages overlapping."""
    src = make_source(count=300, bad_every=10)
    src.faults(**switches)
    p = make_pipeline(src)
    port = tb.free_port()
    p.start_workers()
    extractor = p.start("extractor", ETL_RUN_ON_START="true", ETL_OPS_PORT=str(port), ETL_OPS_HOST="127.0.0.1")
    run = p.wait_run()
    warnings = warnings_of(run)
    assert [w for w in warnings if w.startswith("the source's pages overlap")] == overlap_warnings, warnings
    assert any(w.startswith("duplicate user ids: 10 ids") for w in warnings) == bool(repeated)  # the saver's check
    assert metric(port, "etl_run_duplicate_ids_total") == repeated
    assert ("user ids fetched again in this run" in extractor.output()) == bool(repeated), extractor.output()
    with p.db() as db:
        reasons = [r[0] for r in db.execute("SELECT error_reason FROM invalid_users WHERE run_id=?", (run["run_id"],))]
    assert reasons.count("id: 'abc' is not an integer") == 3, reasons
    assert_nothing_left(p)


# --- Kind 2: a source that never ends -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "cause", "loaded"),
    [
        # The list grows by a page per request (first total 400): past 1.5 x 400 + 100 users the run stops.
        ({}, "ETL_RUN_MAX_RECORDS_FACTOR=1.5", 700),
        # The page cap: 1 x the 4 pages of the first total, plus one.
        ({"ETL_RUN_MAX_PAGES_FACTOR": "1", "ETL_RUN_MAX_RECORDS_FACTOR": "10"}, "ETL_RUN_MAX_PAGES_FACTOR=1", 500),
    ],
)
def test_a_list_that_grows_per_request_ends_the_run_at_the_cap(make_source, make_pipeline, settings, cause, loaded):
    src = make_source(count=300)
    src.faults(grow_per_request=100)
    p = make_pipeline(src, **settings)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 1, done.stdout + done.stderr
    run = p.wait_run(("failed",))
    assert cause in run["error"] and "the total first announced (400" in run["error"], run["error"]
    changed = [w for w in warnings_of(run) if w.startswith("source total changed")]
    assert len(changed) == 1, warnings_of(run)  # once, not once per page
    wait_for(lambda: loaded_pages(p) == loaded // 100, what="the pages handed on before the cap loaded")
    assert p.user_ids("raw_users", run["run_id"]) == list(range(1, loaded + 1))
    assert_nothing_left(p)


def test_a_total_one_page_ahead_ends_with_a_warning(make_source, make_pipeline):
    src = make_source(count=300)
    src.faults(total_ahead=100)
    p = make_pipeline(src)
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    assert warnings_of(run) == ["fetched 300 users but the source's total says 400"]
    assert_exact(p, run, list(range(1, 301)))
    assert_nothing_left(p)


# --- Kind 4: the lease lapses under a slow page -------------------------------------------------------------


def test_a_lapsed_lease_taken_over_fences_the_late_extractor(make_source, make_pipeline):
    # A slow page renews the lease while it is awaited; a process that cannot run (paused, starved) cannot: the
    # first extractor is stopped (SIGSTOP) during its 8 s page, four times its 2 s lease, and continued once the
    # run was taken over and finished.
    src, p = with_slow_page(make_source, make_pipeline, 300, 100, 8, ETL_LOCK_TTL_S="2", ETL_REQUEST_TIMEOUT_S="30")
    late = p.start("extractor", "once", tag="late")
    wait_for(lambda: any(r["skip"] == 100 for r in src.requests()), what="the slow page asked")
    late.popen.send_signal(signal.SIGSTOP)
    try:
        taker = p.extract()  # waits out the lapsed lease, takes the run over and finishes it
    finally:
        late.popen.send_signal(signal.SIGCONT)
    assert taker.returncode == 0, taker.stdout + taker.stderr
    run = p.wait_run()
    assert late.popen.wait(30) == 1
    out = late.output()
    assert "run lease lost; stopping without writing" in out and "another extractor took the run lease" in out
    assert RESUMABLE_HINT not in out
    assert_exact(p, run, list(range(1, 301)))
    assert len(p.runs()) == 1 and p.runs()[0]["status"] == "succeeded"  # the finished run was not reopened
    assert_nothing_left(p)
    # POST /etl_runs is accepted (nothing runs), and the next run is a new one.
    port = tb.free_port()
    api = p.start("api", ETL_API_PORT=str(port), ETL_API_HOST="127.0.0.1")
    tb.wait_port(port, proc=api.popen)
    asked = httpx.post(f"http://127.0.0.1:{port}/etl_runs", headers={"Authorization": "Bearer test-token"}, timeout=10)
    assert asked.status_code == 202, asked.text
    p.start("extractor", tag="service")  # takes the request
    wait_for(lambda: len(p.runs()) == 2 and p.runs()[-1]["status"] == "succeeded", timeout_s=60, what="next run")
    assert p.runs()[-1]["run_id"] != run["run_id"]


def test_a_lapsed_lease_nobody_took_is_taken_back(make_source, make_pipeline):
    # The extractor is stopped (SIGSTOP) for 3 s, longer than its 2 s lease, while its 6 s page is on its way.
    src, p = with_slow_page(make_source, make_pipeline, 300, 100, 6, ETL_LOCK_TTL_S="2", ETL_REQUEST_TIMEOUT_S="30")
    first = p.start("extractor", "once", tag="paused")
    wait_for(lambda: any(r["skip"] == 100 for r in src.requests()), what="the slow page asked")
    first.popen.send_signal(signal.SIGSTOP)
    try:
        wait_for(lambda: not p.redis.exists(p.keys.extract_lock), timeout_s=10, what="the lease lapsed")
    finally:
        first.popen.send_signal(signal.SIGCONT)
    assert first.popen.wait(60) == 0, first.output()
    assert "nobody took it: taken back" in first.output()
    assert_exact(p, p.wait_run(), list(range(1, 301)))
    assert_nothing_left(p)


# --- Issue 22 item 2: a stopped extractor frees its lease -----------------------------------------------------


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_stopped_extractor_frees_its_lease_so_the_next_resumes_at_once(make_source, make_pipeline, sig):
    src = make_source(count=600)
    src.faults([{"skip": None, "delay_s": 0.3, "status": 200, "times": -1}])
    ttl_s = 120
    p = make_pipeline(src, ETL_PAGE_SIZE="50", ETL_LOCK_TTL_S=str(ttl_s))
    p.start_workers()
    first = p.start("extractor", "once", tag="first")
    wait_for(lambda: int(p.checkpoint().get("next_page", 0)) >= 2, what="two pages handed on")
    first.popen.send_signal(sig)
    assert first.popen.wait(10) == 1
    stopped = time.monotonic()
    assert not p.redis.exists(p.keys.extract_lock)  # freed before the process ended
    handed_on = int(p.checkpoint()["next_page"])
    again = p.start("extractor", "once", tag="again")
    wait_for(lambda: int(p.checkpoint().get("next_page", 0)) > handed_on, timeout_s=ttl_s, what="a new page")
    assert time.monotonic() - stopped < ttl_s / 2  # not after the lease (120 s): at once
    assert again.popen.wait(60) == 0
    assert_exact(p, p.wait_run(), list(range(1, 601)), page_size=50)


@pytest.mark.slow
def test_ctrl_c_in_the_demo_frees_the_lease_and_the_next_demo_resumes_at_once(tmp_path, make_source):
    from tests.integration.test_demo import Demo

    src = make_source(count=3000)
    src.faults([{"skip": None, "delay_s": 0.3, "status": 200, "times": -1}])
    demo = Demo(tmp_path / "home")
    env = demo.env(ETL_SOURCE_URL=src.url)
    with (tmp_path / "first.out").open("w") as out:
        first = subprocess.Popen(demo.argv("--once"), env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for(lambda: len(src.requests()) >= 3, timeout_s=120, what="the demo's run under way")
        first.send_signal(signal.SIGINT)  # Ctrl-C
        assert first.wait(30) == 0
    finally:
        if first.poll() is None:
            first.kill()
    stopped = time.time()
    asked = {r["skip"] for r in src.requests()}
    second = subprocess.run(demo.argv("--once"), env=env, capture_output=True, text=True, timeout=170)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "resuming run" in second.stdout
    new = [r["at"] for r in src.requests() if r["skip"] not in asked and r["at"] > stopped]
    assert new and min(new) - stopped < 60, (stopped, new[:3])  # 120 s is the lease: it was not waited out


# --- Issue 28: pages fetched concurrently, handed on in order -------------------------------------------------


def test_pages_fetched_at_once_are_handed_on_in_order(make_source, make_pipeline):
    # Later pages overtake the slow one.
    src, p = with_slow_page(make_source, make_pipeline, 1000, 100, 1.5, ETL_FETCH_CONCURRENCY="4")
    assert p.extract().returncode == 0
    run = p.wait_run()
    at = {r["skip"]: r["at"] for r in src.requests()}
    assert at[200] < at[100] + 1.5 and at[300] < at[100] + 1.5  # asked while the slow page was in flight
    assert p.user_ids("raw_users", run["run_id"]) == list(range(1, 1001))  # in page order, each once
    assert_exact(p, run, list(range(1, 1001)))
    assert_nothing_left(p)


def test_short_pages_shift_the_offsets_and_nothing_is_skipped(make_source, make_pipeline):
    src = make_source(count=500)
    src.faults(max_limit=30)  # asked for 100, the source gives 30: requests planned 100 apart are dropped
    p = make_pipeline(src, ETL_FETCH_CONCURRENCY="4")
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    assert p.user_ids("raw_users", run["run_id"]) == list(range(1, 501))
    assert warnings_of(run) == []
    assert_nothing_left(p)


def test_a_429_holds_every_fetcher_back(make_source, make_pipeline):
    src = make_source(count=2000)
    # The 429 comes back on a page ahead while a slow page holds the hand-on; when that one arrives the hand-on
    # moves on and would ask for more pages at once: the 429's wait holds them back too.
    src.faults(
        [
            {"skip": 300, "delay_s": 1.5, "status": 200, "times": 1},
            {"skip": 600, "status": 429, "retry_after": 3, "times": 1},
        ]
    )
    p = make_pipeline(src, ETL_FETCH_CONCURRENCY="4", ETL_RETRY_DELAYS="0.05,0.05")
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    assert_exact(p, run, list(range(1, 2001)))
    requests = src.requests()
    refused = next(r["at"] for r in requests if r["skip"] == 600)
    # Requests already sent when the 429 came back may land just after it; none starts during its wait.
    during = [r for r in requests if refused + 1.0 < r["at"] < refused + 2.5]
    assert during == [], during


def test_a_run_that_ends_leaves_no_request_behind(make_source, make_pipeline):
    """Pages asked for ahead are abandoned when the run ends: `once` exits without waiting for them or retrying."""
    slow_s = 90
    _, p = with_slow_page(
        make_source,
        make_pipeline,
        1000,
        300,
        slow_s,
        {"ignore_skip": True},
        ETL_FETCH_CONCURRENCY="4",
        ETL_RETRY_DELAYS="5,15,45",
        ETL_REQUEST_TIMEOUT_S="120",
    )
    done = p.extract(timeout_s=slow_s / 2)  # the page at skip=300 is still being answered when the run fails
    assert done.returncode == 1, done.stdout + done.stderr
    assert "the source ignores skip" in p.wait_run(("failed",))["error"]
    assert "retrying" not in done.stdout + done.stderr
    assert_nothing_left(p)


def test_sigterm_while_a_page_asked_ahead_is_on_its_way(make_source, make_pipeline):
    _, p = with_slow_page(
        make_source, make_pipeline, 600, 300, 60, ETL_FETCH_CONCURRENCY="4", ETL_REQUEST_TIMEOUT_S="120"
    )
    extractor = p.start("extractor", "once")
    wait_for(lambda: p.checkpoint().get("next_skip") == "300", what="the pages before the slow one handed on")
    extractor.popen.send_signal(signal.SIGTERM)
    assert extractor.popen.wait(10) == 1  # the 60 s answer is not waited for
    assert p.checkpoint()["next_skip"] == "300" and not p.redis.exists(p.keys.extract_lock)
    again = p.extract()
    assert again.returncode == 0, again.stdout + again.stderr
    assert_exact(p, p.wait_run(), list(range(1, 601)))
