"""The source client: Retry-After in every form, retry waits, settings, and one response read against the
local source server (bounded in time and size, decoded incrementally, BOM and white space tolerated)."""

import base64
import gzip
import threading
import time
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime

import httpx
import orjson
import pytest
from pydantic import ValidationError
from structlog.testing import capture_logs

from dummyjson.server import Source
from etl_common import retry
from extractor.settings import ExtractorSettings
from extractor.source import (
    Bounds,
    SourceRefused,
    SourceUnavailable,
    _Wait,
    clean,
    fetch_once,
    fetch_page,
    parse_retry_after,
    source_message,
)
from tests.support import SourceServer


def _asctime(when: datetime) -> str:
    return f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"


# Each form as a function of the date: the date is taken when the test runs, not when the module is collected
# (a whole suite can run between the two).
HTTP_DATE_FORMS = {
    "imf-fixdate": lambda when: format_datetime(when, usegmt=True),  # Sun, 06 Nov 1994 08:49:37 GMT
    "rfc850": lambda when: when.strftime("%A, %d-%b-%y %H:%M:%S GMT"),  # Sunday, 06-Nov-94 08:49:37 GMT
    "asctime": _asctime,  # Sun Nov  6 08:49:37 1994 (no zone: GMT)
    "asctime-zero-padded": lambda when: when.strftime("%a %b %d %H:%M:%S %Y"),
    "minus-0000": lambda when: when.strftime("%a, %d %b %Y %H:%M:%S -0000"),  # reads as a naive date: GMT too
    "plus-0200": lambda when: (when + timedelta(hours=2)).strftime("%a, %d %b %Y %H:%M:%S +0200"),
}


@pytest.mark.parametrize("form", sorted(HTTP_DATE_FORMS))
def test_retry_after_http_dates_in_every_form(form):
    value = HTTP_DATE_FORMS[form](datetime.now(timezone.utc).replace(microsecond=0) + timedelta(seconds=30))
    seconds = parse_retry_after(value)
    assert seconds is not None and 20 < seconds <= 30, (value, seconds)


def test_retry_after_delta_seconds_and_past_dates():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(" 120 ") == 120.0
    assert parse_retry_after("0") == 0.0
    assert parse_retry_after(None) is None
    past = datetime.now(timezone.utc) - timedelta(hours=1)
    assert parse_retry_after(_asctime(past)) == 0.0
    assert parse_retry_after(format_datetime(past, usegmt=True)) == 0.0


@pytest.mark.parametrize(
    "value",
    ["soon", "-5", "nan", "inf", "1e3", "0x10", "Thu, 32 Dec 2026 18:18:45 GMT", "Thu, 03 Dec 99999 18:18:45 GMT",
     "Thu Dec 03 25:61:00 2026", "Thu Dec 03\x1b[31m 2026"],
)  # fmt: skip
def test_unparseable_retry_after_is_ignored_with_a_log_line(value):
    with capture_logs() as logs:
        assert parse_retry_after(value) is None
    assert [e["event"] for e in logs] == ["Retry-After ignored: neither delta-seconds nor an HTTP-date"]
    assert "\x1b" not in logs[0]["value"]


def test_empty_retry_after_is_absent():
    with capture_logs() as logs:
        assert parse_retry_after("") is None and parse_retry_after("  ") is None
    assert logs == []


class _State:
    def __init__(self, attempt, exc):
        self.attempt_number = attempt
        self.outcome = type("O", (), {"exception": lambda self: exc})()


def test_wait_uses_configured_delays_with_retry_after_as_capped_floor():
    wait = _Wait([5, 15, 45], retry_after_max_s=60)
    assert wait(_State(1, SourceUnavailable("x"))) == 5
    assert wait(_State(3, SourceUnavailable("x"))) == 45
    assert wait(_State(1, SourceUnavailable("x", retry_after_s=20))) == 20
    assert wait(_State(1, SourceUnavailable("x", retry_after_s=3600))) == 60


def test_settings_parse_delays_and_reject_bad_cron():
    s = ExtractorSettings(retry_delays="0.1, 0.2", _env_file=None)
    assert s.retry_delays == [0.1, 0.2]
    with pytest.raises(ValidationError, match="cron"):
        ExtractorSettings(schedule="every day", _env_file=None)
    with pytest.raises(ValidationError):
        ExtractorSettings(retry_delays="1,-2", _env_file=None)


def test_page_cap_is_derived_from_the_page_size_unless_set():
    assert ExtractorSettings(_env_file=None).page_max_bytes() == 8 * 1024 * 1024
    assert ExtractorSettings(page_size=1000, _env_file=None).page_max_bytes() == 1000 * 64 * 1024
    bounds = Bounds.of(ExtractorSettings(page_size=10, _env_file=None))
    assert bounds.max_bytes == 8 * 1024 * 1024 and "derived from ETL_PAGE_SIZE=10" in bounds.max_bytes_origin
    bounds = Bounds.of(ExtractorSettings(source_max_page_bytes=5000, source_deadline_s=7, _env_file=None))
    assert (bounds.max_bytes, bounds.max_bytes_origin, bounds.deadline_s) == (5000, "ETL_SOURCE_MAX_PAGE_BYTES", 7)
    with pytest.raises(ValidationError):
        ExtractorSettings(source_deadline_s=0, _env_file=None)


def test_messages_lose_control_characters_and_are_cut():
    assert clean("Invalid\x1b[31m API\u202e key\r\n\tnow\ud800") == "Invalid[31m API key now"
    assert len(clean("x" * 1000)) == 200 and clean("x" * 1000).endswith("…")
    assert source_message({"message": "Invalid API key"}) == "Invalid API key"
    assert source_message({"error": {"message": "quota exceeded", "code": 429}}) == "quota exceeded"
    assert source_message({"errors": [{"detail": "bad token"}]}) == "bad token"
    assert source_message({"error": "unauthorized", "message": ""}) == "unauthorized"
    assert source_message({"errors": ["bad token", "expired"]}) == "bad token"
    assert source_message({"users": None}) is None and source_message([{"message": "a user's field"}]) is None


# --- one response, read from the local source server ---------------------------------------------------------


@pytest.fixture(scope="module")
def _server():
    server = SourceServer(Source(250)).start()
    yield server
    server.stop()


@pytest.fixture
def source(_server):
    _server.faults([], reset_stats=True)
    return _server


@pytest.fixture
def http():
    with httpx.Client(timeout=30) as client:
        yield client


BOUNDS = Bounds(deadline_s=30, max_bytes=8 * 1024 * 1024)


def _ids(page) -> list[int]:
    return [u["id"] for u in page.users]


@pytest.mark.parametrize(
    "fault",
    [
        {"bom": True},
        {"pad": " \r\n\t "},
        {"bom": True, "pad": "\n"},
        {"encoding": "gzip"},
        {"encoding": "x-gzip"},
        {"encoding": "deflate"},
        {"encoding": "deflate-raw"},
        {"encoding": "gzip", "bom": True, "pad": "\r\n"},
        {"encoding": "identity", "bom": True},
        {"charset": "utf-16"},
        {"charset": "utf-16-be", "pad": " "},
        {"charset": "utf-16-le"},
        {"charset": "utf-32", "encoding": "gzip"},
        {"charset": "utf-32-le", "bom": True},
    ],
    ids=str,
)
def test_pages_rfc_8259_and_http_allow_are_read(source, http, fault):
    source.faults([{"skip": 100, "times": -1, **fault}])
    page = fetch_once(http, source.url, 100, 100, BOUNDS)
    assert (_ids(page), page.total) == (list(range(101, 201)), 250)


def test_a_lone_surrogate_in_utf_16_quarantines_its_record_only(source, http):
    body = '{"users":[{"id":1,"firstName":"a\ud83d"},{"id":2,"firstName":"Łukasz 🙂"}],"total":2}'
    source.faults([{"skip": 0, "body_b64": base64.b64encode(body.encode("utf-16", "surrogatepass")).decode()}])
    page = fetch_once(http, source.url, 0, 100, BOUNDS)
    assert page.users[1] == {"id": 2, "firstName": "Łukasz 🙂"}
    assert page.quarantined() == ["firstName: not valid Unicode (lone surrogate U+D83D, half of a character)"]


def test_bytes_that_only_look_like_utf_16_are_not_json(source, http):
    odd = b'\xff\xfe{\x00"\x00a'  # an odd number of bytes after a UTF-16 BOM
    source.faults([{"skip": 0, "body_b64": base64.b64encode(odd).decode()}])
    with pytest.raises(SourceUnavailable, match="is not JSON: it looks like utf-16 but is not") as raised:
        fetch_once(http, source.url, 0, 100, BOUNDS)
    assert "it starts with bytes ff fe 7b 00" in str(raised.value) and "ETL_SOURCE_URL" in str(raised.value)


def test_a_binary_body_starting_with_a_nul_byte_is_named_by_its_bytes(source, http):
    source.faults([{"skip": 0, "body_b64": base64.b64encode(b"\x00garbage").decode()}])
    with pytest.raises(SourceUnavailable, match="is not JSON") as raised:
        fetch_once(http, source.url, 0, 100, BOUNDS)
    assert r"it starts with b'\x00garbage'" in str(raised.value) and "ETL_SOURCE_URL" in str(raised.value)


def test_a_bom_before_a_page_with_a_value_only_the_tolerant_reader_reads(source, http):
    body = b'{"users":[{"id":1,"age":NaN},{"id":2}],"total":2}'
    source.faults([{"skip": 0, "bom": True, "body_b64": base64.b64encode(body).decode()}])
    page = fetch_once(http, source.url, 0, 100, BOUNDS)
    assert page.total == 2 and page.quarantined() == ["age: NaN is not a number"]


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
def test_a_decompression_bomb_is_refused_without_inflating_it(source, http, encoding):
    source.faults([{"skip": 0, "bomb_bytes": 1 << 30, "encoding": encoding}])
    with pytest.raises(SourceRefused) as err:
        fetch_once(http, source.url, 0, 100, BOUNDS)
    message = str(err.value)
    assert f"larger than its cap once decoded: {BOUNDS.max_bytes} bytes (ETL_SOURCE_MAX_PAGE_BYTES)" in message
    assert "A decompression bomb" in message and "raise ETL_SOURCE_MAX_PAGE_BYTES" in message


def test_a_bomb_below_the_cap_is_just_a_large_page(source, http):
    source.faults([{"skip": 0, "bomb_bytes": 5 << 20}])  # the page, then 5 MiB of white space
    assert _ids(fetch_once(http, source.url, 0, 100, BOUNDS)) == list(range(1, 101))


def test_a_page_larger_than_the_cap_is_refused_on_the_wire(source, http):
    source.faults([{"skip": 0, "users_per_page": 1000}])
    cap = Bounds(deadline_s=30, max_bytes=1_000_000, max_bytes_origin="ETL_SOURCE_MAX_PAGE_BYTES")
    with pytest.raises(SourceRefused, match=r"larger than its cap on the wire \(Content-Length \d+\): 1000000 bytes"):
        fetch_once(http, source.url, 0, 100, cap)
    source.faults([{"skip": 0, "users_per_page": 300, "encoding": "gzip"}])
    small = Bounds(deadline_s=30, max_bytes=200_000, max_bytes_origin="ETL_SOURCE_MAX_PAGE_BYTES")
    with pytest.raises(SourceRefused, match="larger than its cap once decoded: 200000 bytes"):
        fetch_once(http, source.url, 0, 100, small)


def test_redirects_are_followed_without_reading_their_bodies(source, http):
    source.faults([{"skip": 0, "redirect": True, "bomb_bytes": 1 << 30, "times": 3}])
    assert _ids(fetch_once(http, source.url, 0, 100, BOUNDS)) == list(range(1, 101))
    assert len(source.requests()) == 4
    source.faults([{"skip": 0, "redirect": True, "times": -1}], reset_stats=True)
    with pytest.raises(SourceUnavailable, match="more than 10 redirects for skip=0; check ETL_SOURCE_URL"):
        fetch_once(http, source.url, 0, 100, BOUNDS)
    assert len(source.requests()) == 11


def test_more_users_than_asked_is_refused(source, http):
    source.faults([{"skip": 0, "users_per_page": 101}])
    with pytest.raises(SourceRefused, match="answered 101 users for limit=100 at skip=0"):
        fetch_once(http, source.url, 0, 100, BOUNDS)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "x-custom", "gzip, gzip", "gzip, br"])
def test_an_encoding_not_asked_for_is_refused_by_name(source, http, encoding):
    source.faults([{"skip": 0, "encoding": encoding}])
    with pytest.raises(SourceRefused) as err:
        fetch_once(http, source.url, 0, 100, BOUNDS)
    assert f"Content-Encoding {encoding!r}" in str(err.value)
    assert "gzip, deflate or identity (Accept-Encoding)" in str(err.value)


@pytest.mark.parametrize(
    ("encoding", "body", "error"),
    [
        ("gzip", b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xffnot deflate at all", "the gzip body is corrupt"),
        ("gzip", gzip.compress(b'{"users":[],"total":0}' * 100)[:60], "the gzip body ended before its end"),
        ("deflate", b"neither zlib nor raw deflate", "the deflate body is corrupt"),
    ],
)
def test_a_corrupt_or_cut_compressed_body_is_retryable(source, http, encoding, body, error):
    source.faults([{"skip": 0, "body_b64": base64.b64encode(body).decode(), "encoding": encoding, "label_only": True}])
    with pytest.raises(SourceUnavailable, match=error):
        fetch_once(http, source.url, 0, 100, BOUNDS)


def test_gzip_members_one_after_another_are_one_body(source, http):
    text = orjson.dumps({"users": [{"id": 1}, {"id": 2}], "total": 2})
    body = gzip.compress(text[:10]) + gzip.compress(text[10:]) + b"\0\0"
    source.faults([{"skip": 0, "body_b64": base64.b64encode(body).decode(), "encoding": "gzip", "label_only": True}])
    assert _ids(fetch_once(http, source.url, 0, 100, BOUNDS)) == [1, 2]


def test_an_error_object_with_status_200_keeps_the_source_message(source, http):
    said = "Invalid API key\x1b[2J\x00 for user " + "x" * 500
    body = base64.b64encode(orjson.dumps({"message": said})).decode()
    source.faults([{"skip": 0, "body_b64": body}])
    with pytest.raises(SourceUnavailable) as err:
        fetch_once(http, source.url, 0, 100, BOUNDS)
    message = str(err.value)
    assert "HTTP 200 for skip=0 without a 'users' list, with the message 'Invalid API key[2J for user xxx" in message
    assert "\x1b" not in message and "\x00" not in message and "x" * 200 not in message
    assert "check ETL_SOURCE_URL" in message


def test_an_error_status_keeps_the_source_message(source, http):
    source.faults([{"skip": 0, "status": 401}])
    with pytest.raises(SourceUnavailable, match="HTTP 401 for skip=0, saying 'injected failure'"):
        fetch_once(http, source.url, 0, 100, BOUNDS)


@pytest.mark.parametrize(
    ("fault", "got"),
    [({"trickle_bps": 20}, "only"), ({"delay_s": 30}, "no response headers")],
    ids=["trickling body", "slow headers"],
)
def test_the_deadline_is_a_total_per_response(source, http, fault, got):
    source.faults([{"skip": 0, **fault}])
    beats: list[float] = []
    started = time.monotonic()
    with pytest.raises(SourceUnavailable) as err:
        fetch_once(http, source.url, 0, 100, Bounds(deadline_s=2.5, max_bytes=1 << 23), lambda: beats.append(1))
    assert f"the source sent {got}" in str(err.value) and "within 2.5 s (ETL_SOURCE_DEADLINE_S" in str(err.value)
    assert time.monotonic() - started < 25  # cut by the deadline, long before the body or the headers
    assert len(beats) >= 1  # the run was told it is alive while it waited


def test_sigterm_ends_an_in_flight_request(source, http):
    source.faults([{"skip": 0, "delay_s": 30}])
    timer = threading.Timer(0.5, retry.STOP.set)
    timer.start()
    try:
        with pytest.raises(retry.Stopped, match="during the source request for skip=0"):
            fetch_once(http, source.url, 0, 100, Bounds(deadline_s=60, max_bytes=1 << 23))
    finally:
        timer.join()
        retry.STOP.clear()


def test_refusals_are_not_retried_and_failures_name_the_next_step(source, http):
    source.faults([{"skip": 0, "encoding": "br", "times": -1}])
    with pytest.raises(SourceRefused):
        fetch_page(http, source.url, 0, 100, [0.01, 0.01], 0, BOUNDS)
    assert len(source.requests()) == 1
    source.faults([{"skip": 0, "status": 503, "times": -1}], reset_stats=True)
    with pytest.raises(Exception, match=r"after 2 retries: HTTP 503 for skip=0.*The run resumes from this page"):
        fetch_page(http, source.url, 0, 100, [0.01, 0.01], 0, BOUNDS)
    assert len(source.requests()) == 3
