"""How the extractor reads one source response, on real parts: a trickling or stalled source, Retry-After in every
form, decompression bombs and oversized pages, encodings it did not ask for, error objects with status 200, and
the bytes RFC 8259 lets a reader accept. Every run ends, says why, and leaves no lock behind."""

import base64
import time

import httpx
import orjson
import pytest

import testbed as tb
from tests.faults.conftest import assert_exact, loaded_pages, wait_for
from tests.faults.test_sigterm import term

IDS = list(range(1, 251))
FAST_RETRIES = {"ETL_RETRY_DELAYS": "0.05"}


def _no_lock(p) -> None:
    assert not p.redis.exists(p.keys.extract_lock), "the run lock outlived the extractor"


def _failed_at(p, done, skip: int, pages_loaded: int, *expected: str):
    """The run failed with every ``expected`` text in its error and the log; checkpoint and lock as they must be."""
    assert done.returncode == 1, done.stdout + done.stderr
    run = p.wait_run(("failed",))
    for text in expected:
        assert text in run["error"], (text, run["error"])
        assert text in done.stdout, text
    wait_for(lambda: loaded_pages(p) == pages_loaded, what=f"{pages_loaded} pages loaded")
    assert p.count("raw_users", run["run_id"]) == p.count("processed_users", run["run_id"]) == 100 * pages_loaded
    assert p.count("invalid_users", run["run_id"]) == 0
    assert p.checkpoint()["next_skip"] == str(skip), "the checkpoint must keep the failed page's place"
    _no_lock(p)
    return run


def _page_100_fails(make_source, make_pipeline, fault: dict, *expected: str, **settings: str):
    """A run of 250 users whose page at skip=100 always has ``fault``: it fails with ``expected``; (src, p, run)."""
    src = make_source(count=250)
    src.faults([{"skip": 100, "times": -1, **fault}])
    p = make_pipeline(src, **{**FAST_RETRIES, **settings})
    p.start_workers()
    return src, p, _failed_at(p, p.extract(), 100, 1, *expected)


def _resumes_exactly(p, src, run) -> None:
    src.faults([])
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    assert_exact(p, p.wait_run(run_id=run["run_id"]), IDS)
    _no_lock(p)


def _requests_at(src, skip: int) -> list[dict]:
    return [r for r in src.requests() if r["skip"] == skip]


# --- 3. a trickling or stalled source -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "got"),
    [({"trickle_bps": 2}, "only"), ({"delay_s": 30}, "no response headers")],
    ids=["body at 2 bytes per second", "headers after 30 s"],
)
def test_a_trickling_or_stalled_source_is_cut_at_the_deadline(make_source, make_pipeline, fault, got):
    src, p, run = _page_100_fails(
        make_source,
        make_pipeline,
        fault,
        f"the source sent {got}",
        "for the page at skip=100 within 1.5 s (ETL_SOURCE_DEADLINE_S, a total per response)",
        "if the source is only slow, raise ETL_SOURCE_DEADLINE_S",
        "after 1 retries",
        ETL_SOURCE_DEADLINE_S="1.5",
    )
    assert len(_requests_at(src, 100)) == 2  # the deadline is a retryable failure: one retry, then the run fails
    _resumes_exactly(p, src, run)


@pytest.mark.parametrize("mode", ["once", "serve"])
@pytest.mark.parametrize("fault", [{"trickle_bps": 1}, {"delay_s": 60}], ids=["trickling body", "slow headers"])
def test_sigterm_ends_an_in_flight_request_and_the_lease_holds_until_then(make_source, make_pipeline, mode, fault):
    """The default deadline (60 s) is far off: SIGTERM ends the wait; meanwhile lease and heartbeat stay fresh."""
    src = make_source(count=250)
    src.faults([{"skip": 100, "times": 1, **fault}])
    p = make_pipeline(src, ETL_LOCK_TTL_S="2", ETL_HEARTBEAT_STALE_S="2")
    p.start_workers()
    ops = tb.free_port()
    if mode == "once":
        extractor = p.start("extractor", "once", "--ops", ETL_OPS_PORT=str(ops))
    else:
        extractor = p.start("extractor", ETL_RUN_ON_START="true", ETL_OPS_PORT=str(ops))
    wait_for(lambda: _requests_at(src, 100), what="the request for skip=100 in flight")
    time.sleep(3)  # longer than the lease (2 s) and the heartbeat's staleness (2 s)
    assert p.redis.pttl(p.keys.extract_lock) > 0, "the lease lapsed while the page was awaited"
    assert httpx.get(f"http://127.0.0.1:{ops}/healthz", timeout=5).status_code == 200
    assert term(extractor) == (1 if mode == "once" else 0)
    assert "run interrupted; the checkpoint keeps its place" in extractor.output()
    assert p.checkpoint()["next_skip"] == "100"
    _no_lock(p)
    run = p.runs()[-1]
    assert (run["status"], run["error"]) == ("running", None)  # owed, not failed: the next start resumes it
    _resumes_exactly(p, src, run)


# --- 5. Retry-After in every form -----------------------------------------------------------------------------


def test_retry_after_in_every_form_is_honoured(make_source, make_pipeline):
    """One page per form, each 429 once: the retry waits for the date (1 s resolution) or the seconds."""
    src = make_source(count=550)
    forms = {0: "imf", 100: "rfc850", 200: "asctime", 300: None}
    rules = [{"skip": s, "status": 429, "retry_after": 2, "retry_after_form": f} for s, f in forms.items()]
    rules.append({"skip": 400, "status": 429, "retry_after": "Thu, 32 Dec 2026 25:00:00 GMT"})
    rules.append({"skip": 500, "status": 503, "retry_after": "soon"})
    src.faults(rules)
    p = make_pipeline(src, **FAST_RETRIES)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    for skip, form in forms.items():
        first, second = _requests_at(src, skip)
        assert second["at"] - first["at"] >= 0.95, (form, second["at"] - first["at"])
    assert [len(_requests_at(src, s)) for s in (400, 500)] == [2, 2]
    assert done.stdout.count("Retry-After ignored: neither delta-seconds nor an HTTP-date") == 2
    run = p.wait_run()
    assert run["warnings"] is None
    assert_exact(p, run, list(range(1, 551)))
    _no_lock(p)


# --- 6. bombs and oversized pages -----------------------------------------------------------------------------


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_decompression_bomb_fails_the_run_naming_the_cap(make_source, make_pipeline, encoding):
    """1 GiB of spaces after a valid page, ~1 MB on the wire: refused at the cap, once, without a retry."""
    src, p, run = _page_100_fails(
        make_source,
        make_pipeline,
        {"bomb_bytes": 1 << 30, "encoding": encoding},
        "the page at skip=100 is larger than its cap once decoded: 8388608 bytes "
        "(ETL_SOURCE_MAX_PAGE_BYTES, unset, so derived from ETL_PAGE_SIZE=100)",
        "A decompression bomb, or a source that ignores limit=100",
        "raise ETL_SOURCE_MAX_PAGE_BYTES",
    )
    assert len(_requests_at(src, 100)) == 1, "a bomb is not worth a retry"
    _resumes_exactly(p, src, run)


@pytest.mark.parametrize(
    ("fault", "settings", "expected"),
    [
        # The local source takes seconds to write 50,000 users: only the cap may end this request.
        (
            {"users_per_page": 50_000},
            {"ETL_REQUEST_TIMEOUT_S": "120"},
            "is larger than its cap on the wire (Content-Length ",
        ),
        (
            {"users_per_page": 3_000, "encoding": "gzip"},
            {"ETL_SOURCE_MAX_PAGE_BYTES": "1000000"},
            "larger than its cap once decoded: 1000000 bytes (ETL_SOURCE_MAX_PAGE_BYTES).",
        ),
        ({"users_per_page": 150}, {}, "the source answered 150 users for limit=100 at skip=100"),
    ],
    ids=["50,000 users", "over a set cap, gzip", "150 users"],
)
def test_a_page_larger_than_asked_fails_the_run(make_source, make_pipeline, fault, settings, expected):
    src, _, run = _page_100_fails(make_source, make_pipeline, fault, expected, **settings)
    if fault["users_per_page"] == 50_000:
        assert "8388608 bytes (ETL_SOURCE_MAX_PAGE_BYTES, unset, so derived from ETL_PAGE_SIZE=100)" in run["error"]
    assert len(_requests_at(src, 100)) == 1


# --- 9. bodies the extractor cannot decode; error objects with status 200 -------------------------------------


@pytest.mark.parametrize("encoding", ["br", "zstd", "gzip, br"])  # more variants: tests/unit/extractor/test_source.py
def test_an_encoding_not_asked_for_fails_the_run_by_name(make_source, make_pipeline, encoding):
    src, _, _ = _page_100_fails(
        make_source,
        make_pipeline,
        {"encoding": encoding},
        f"the page at skip=100 came with Content-Encoding {encoding!r}, which the extractor does not decode",
        "it asks for gzip, deflate or identity (Accept-Encoding)",
        "Make the source, or the proxy in front of it, answer in one of those",
    )
    assert len(_requests_at(src, 100)) == 1


def test_an_error_object_with_status_200_keeps_the_source_message(make_source, make_pipeline):
    said = "Invalid API key\x1b[31m supplied.\u202e Get one at https://example.test/keys " + "z" * 400
    body = base64.b64encode(orjson.dumps({"message": said})).decode()
    src, _, run = _page_100_fails(
        make_source,
        make_pipeline,
        {"body_b64": body},
        "the source answered HTTP 200 for skip=100 without a 'users' list, with the message "
        "'Invalid API key[31m supplied. Get one at https://example.test/keys zzz",
        "check ETL_SOURCE_URL and the source's access (key, quota)",
    )
    assert "\x1b" not in run["error"] and "\u202e" not in run["error"] and "z" * 200 not in run["error"]
    assert len(_requests_at(src, 100)) == 2  # a message may be passing (a quota): retried like any bad page


# --- 10. what RFC 8259 lets a reader accept -------------------------------------------------------------------


def test_bytes_rfc_8259_lets_a_reader_accept_are_read(make_source, make_pipeline):
    """A byte order mark, white space around the text, UTF-16 and UTF-32, and the compressions asked for."""
    variants = [
        {"bom": True},
        {"pad": " \r\n\t"},
        {"bom": True, "pad": "\n", "encoding": "gzip"},
        {"encoding": "deflate", "pad": "  "},
        {"encoding": "deflate-raw", "bom": True},
        {"encoding": "x-gzip"},
        {"charset": "utf-16"},  # RFC 7159 allowed UTF-16 and UTF-32; RFC 8259 lets a reader accept them
        {"charset": "utf-32-be", "encoding": "gzip"},
    ]
    src = make_source(count=750)
    src.faults([{"skip": 100 * i, "times": -1, **v} for i, v in enumerate(variants)])
    p = make_pipeline(src)
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    # No page needed a retry (pages are fetched concurrently: the order of the requests varies).
    assert sorted(r["skip"] for r in src.requests()) == list(range(0, 800, 100))
    run = p.wait_run()
    assert (run["error"], run["warnings"]) == (None, None)
    assert_exact(p, run, list(range(1, 751)))
    _no_lock(p)
