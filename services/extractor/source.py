"""The source client: one page per call, bounded in time and size, retried with backoff and Retry-After."""

import contextvars
import json
import re
import threading
import time
import unicodedata
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from typing import Any

import httpx
import orjson
import structlog
from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt

from etl_common import metrics, retry
from etl_common.errors import RunInterrupted, TransientError
from extractor.pagejson import QUARANTINE, quarantined, read_page
from extractor.settings import ExtractorSettings

log = structlog.get_logger(__name__)

# Asked of the source explicitly, so that installing a brotli or zstd package never changes what it may send.
ACCEPT_ENCODING = "gzip, deflate"
# zlib window bits per Content-Encoding the extractor decodes ("deflate" is tried as zlib, then as raw deflate).
_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
# How often a wait for the source looks at SIGTERM and the deadline, and how often it tells the run it is alive.
_TICK_S = 0.1
_ALIVE_EVERY_S = 1.0
# Of an answer that is not a page (4xx, 5xx) only this much is read: enough for the source's message.
_ERROR_BODY_BYTES = 64 * 1024
_MAX_REDIRECTS = 10
_MESSAGE_CHARS = 200
# Keys under which JSON APIs put the reason of an error object (`{"message": "Invalid API key"}`).
_MESSAGE_KEYS = ("message", "error", "error_description", "detail", "title", "msg", "errors")
# Control, format (bidi overrides), surrogate and private-use characters: never copied into an error or a log line.
_UNSHOWN = frozenset(("Cc", "Cf", "Cs", "Co"))
_SURROGATE = re.compile("[\ud800-\udfff]")
_DELTA_SECONDS = re.compile(r"\d+(\.\d+)?")


class SourceUnavailable(TransientError):
    """A page could not be fetched now; carries the server's Retry-After when it sent one."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class SourceFailed(RunInterrupted):
    """Retries for a page are exhausted: the run fails and its checkpoint stays where it was."""


class SourceRefused(SourceFailed):
    """An answer no retry can make usable (too large, an encoding not asked for, more users than asked): no retries."""


@dataclass
class Page:
    users: list[Any]
    total: int

    def quarantined(self) -> list[str]:
        """Reasons of the records that could not travel as they are (see extractor.pagejson)."""
        return [u[QUARANTINE]["reason"] for u in self.users if quarantined(u)]


@dataclass(frozen=True)
class Bounds:
    """What one source response may cost: its total time (headers and body) and the size of its body."""

    deadline_s: float
    max_bytes: int
    max_bytes_origin: str = "ETL_SOURCE_MAX_PAGE_BYTES"

    @classmethod
    def of(cls, settings: ExtractorSettings) -> "Bounds":
        origin = "ETL_SOURCE_MAX_PAGE_BYTES"
        if not settings.source_max_page_bytes:
            origin += f", unset, so derived from ETL_PAGE_SIZE={settings.page_size}"
        return cls(settings.source_deadline_s, settings.page_max_bytes(), origin)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header: delta-seconds or an HTTP-date in any of RFC 9110's three forms.

    None when absent; a value that is neither is ignored with a warning (the configured delay applies).
    """
    if value is None or not value.strip():
        return None
    text = value.strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        log.warning("Retry-After ignored: neither delta-seconds nor an HTTP-date", value=clean(text, 80))
        return None
    if when.tzinfo is None:
        # asctime dates carry no zone, and "-0000" reads as none: HTTP dates are always GMT (RFC 9110 5.6.7).
        when = when.replace(tzinfo=timezone.utc)
    return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())


def clean(text: str, limit: int = _MESSAGE_CHARS) -> str:
    """``text`` fit for a log line or a run's error: control, format and surrogate characters out, cut to ``limit``."""
    kept = "".join(" " if c.isspace() else c for c in text if c.isspace() or unicodedata.category(c) not in _UNSHOWN)
    kept = " ".join(kept.split())
    return kept if len(kept) <= limit else kept[: limit - 1] + "…"


def source_message(value: Any) -> str | None:
    """The reason a JSON error object gives (``{"message": ...}``, ``{"errors": [{"detail": ...}]}``...), cleaned."""
    for _ in range(3):  # a few levels, never a deep walk
        if not isinstance(value, dict):
            return None
        value = next((value[k] for k in _MESSAGE_KEYS if k in value and value[k] not in (None, "", [], {})), None)
        if isinstance(value, list) and value:
            value = value[0]
        if isinstance(value, str):
            return clean(value)
    return None


def _describe(value: Any) -> str:
    """What a JSON value that is not a page is, for an error: the message it carries, else its shape."""
    message = source_message(value)
    if message:
        return f"with the message {message!r}"
    if isinstance(value, dict):
        return "with a JSON object of keys " + clean(", ".join(list(value)[:10]), 120)
    return f"with a JSON {type(value).__name__}"


class _Decoder:
    """Incremental Content-Encoding decoding whose output per call is bounded (a 1 GiB bomb never inflates)."""

    def __init__(self, coding: str | None) -> None:
        self.coding = coding
        self.wbits = _WBITS.get(coding or "", 0)
        self.zlib = zlib.decompressobj(self.wbits) if coding else None
        self.started = False

    def feed(self, data: bytes, max_out: int) -> bytes:
        """Up to ``max_out`` bytes of decoded data; more is left unread (the caller stops at its cap)."""
        if self.zlib is None:
            return data[:max_out] if len(data) > max_out else data
        try:
            out = self._feed(data, max_out)
        except zlib.error as exc:
            raise SourceUnavailable(f"the {self.coding} body is corrupt ({exc}); the page is retried") from exc
        self.started = True
        return out

    def _feed(self, data: bytes, max_out: int) -> bytes:
        assert self.zlib is not None
        try:
            out = self.zlib.decompress(data, max_out)
        except zlib.error:
            if self.coding != "deflate" or self.started or self.wbits < 0:
                raise
            # "deflate" sent without its zlib wrapper, as some servers do (httpx tolerates it too).
            self.wbits = -zlib.MAX_WBITS
            self.zlib = zlib.decompressobj(self.wbits)
            out = self.zlib.decompress(data, max_out)
        gzip = self.wbits > zlib.MAX_WBITS
        while gzip and self.zlib.eof and self.zlib.unused_data.strip(b"\0") and len(out) < max_out:
            # Concatenated gzip members are one body (RFC 1952 2.2); zero padding after the last is ignored.
            rest = self.zlib.unused_data
            self.zlib = zlib.decompressobj(self.wbits)
            out += self.zlib.decompress(rest, max_out - len(out))
        return out

    def finish(self) -> None:
        """SourceUnavailable when a compressed body ended before its end marker (a cut connection)."""
        if self.zlib is not None and not self.zlib.eof:
            raise SourceUnavailable(f"the {self.coding} body ended before its end; the page is retried")


@dataclass
class _Exchange:
    """One request run in a thread of its own, so the wait for it can be abandoned (deadline, SIGTERM)."""

    status: int | None = None
    headers: httpx.Headers | None = None
    body: bytes = b""
    wire_bytes: int = 0
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)
    abandoned: threading.Event = field(default_factory=threading.Event)


class _Abandoned(Exception):
    """The waiting side gave up on this request (deadline or SIGTERM); the thread only closes the connection."""


def _coding(headers: httpx.Headers, skip: int) -> str | None:
    """The one Content-Encoding to undo (None: identity); SourceRefused for any the extractor did not ask for."""
    given = str(headers.get("Content-Encoding", ""))
    codings = [c.strip().lower() for c in given.split(",") if c.strip() and c.strip().lower() != "identity"]
    if not codings:
        return None
    if len(codings) == 1 and codings[0] in _WBITS:
        return codings[0]
    raise SourceRefused(
        f"the page at skip={skip} came with Content-Encoding {clean(given, 60)!r}, which the extractor does not "
        f"decode: it asks for {ACCEPT_ENCODING} or identity (Accept-Encoding). Make the source, or the proxy in "
        "front of it, answer in one of those, or point ETL_SOURCE_URL at an endpoint that does"
    )


def _too_large(skip: int, limit: int, bounds: Bounds, where: str) -> SourceRefused:
    return SourceRefused(
        f"the page at skip={skip} is larger than its cap {where}: {bounds.max_bytes} bytes "
        f"({bounds.max_bytes_origin}). A decompression bomb, or a source that ignores limit={limit}. "
        "Check the source; if its pages are really this large, raise ETL_SOURCE_MAX_PAGE_BYTES"
    )


def _read_body(
    resp: httpx.Response, ex: _Exchange, cap: int, cut: bool, refuse: Callable[[str], SourceRefused], skip: int
) -> bytes:
    """The decoded body, reading at most ``cap`` bytes off the wire and decoding at most ``cap``.

    Over the cap: ``refuse`` (a page), or the first ``cap`` bytes when ``cut`` (an error answer, read for its message).
    """
    declared = resp.headers.get("Content-Length", "")
    if not cut and declared.isdigit() and int(declared) > cap:
        raise refuse(f"on the wire (Content-Length {declared})")
    decoder = _Decoder(_coding(resp.headers, skip))
    out = bytearray()
    for chunk in resp.iter_raw():
        if ex.abandoned.is_set():
            raise _Abandoned()
        ex.wire_bytes += len(chunk)
        out += decoder.feed(chunk, cap + 1 - len(out))
        if len(out) > cap or ex.wire_bytes > cap:
            if cut:
                return bytes(out[:cap])
            raise refuse("on the wire" if ex.wire_bytes > cap else "once decoded")
    decoder.finish()
    return bytes(out)


def _exchange(client: httpx.Client, url: str, skip: int, limit: int, bounds: Bounds, ex: _Exchange) -> None:
    """The request and its body (run in the request's thread); the outcome lands in ``ex``."""

    def refuse(where: str) -> SourceRefused:
        return _too_large(skip, limit, bounds, where)

    try:
        request = client.build_request(
            "GET", url, params={"limit": limit, "skip": skip}, headers={"Accept-Encoding": ACCEPT_ENCODING}
        )
        for _ in range(_MAX_REDIRECTS + 1):
            # Redirects are followed here, not by httpx, which would read (and inflate) their bodies unbounded.
            resp = client.send(request, stream=True, follow_redirects=False)
            try:
                if resp.next_request is None:
                    _answer(resp, ex, bounds, refuse, skip)
                    return
                request = resp.next_request
            finally:
                resp.close()
            if ex.abandoned.is_set():
                return
        ex.error = SourceUnavailable(f"more than {_MAX_REDIRECTS} redirects for skip={skip}; check ETL_SOURCE_URL")
    except httpx.HTTPError as exc:
        if ex.status is None and not ex.abandoned.is_set():
            metrics.SOURCE_REQUESTS.labels(status="error").inc()
        error = SourceUnavailable(f"{type(exc).__name__}: {exc}")
        error.__cause__ = exc
        ex.error = error
    except BaseException as exc:  # the thread hands every outcome to the waiting side
        ex.error = exc
    finally:
        ex.done.set()


def _answer(
    resp: httpx.Response, ex: _Exchange, bounds: Bounds, refuse: Callable[[str], SourceRefused], skip: int
) -> None:
    """Status, headers and body of the final answer into ``ex``: a page's body up to the cap, an error's enough
    for its message."""
    ex.status, ex.headers = resp.status_code, resp.headers
    metrics.SOURCE_REQUESTS.labels(status=str(resp.status_code)).inc()
    if resp.status_code == 200:
        ex.body = _read_body(resp, ex, bounds.max_bytes, False, refuse, skip)
        return
    try:
        ex.body = _read_body(resp, ex, _ERROR_BODY_BYTES, True, refuse, skip)
    except (SourceUnavailable, SourceRefused, httpx.HTTPError):
        ex.body = b""  # the status says enough; its message is only a courtesy


def _await(ex: _Exchange, skip: int, bounds: Bounds, alive: Callable[[], None]) -> None:
    """Wait for the request's thread; SIGTERM (``retry.Stopped``) and the deadline end the wait within a tick."""
    started = last_alive = time.monotonic()
    deadline = started + bounds.deadline_s
    try:
        while not ex.done.wait(_TICK_S):
            if retry.STOP.is_set():
                raise retry.Stopped(f"stop requested during the source request for skip={skip}")
            now = time.monotonic()
            if now >= deadline:
                if ex.status is None:
                    metrics.SOURCE_REQUESTS.labels(status="error").inc()
                got = "no response headers" if ex.status is None else f"only {ex.wire_bytes} bytes of the body"
                raise SourceUnavailable(
                    f"the source sent {got} for the page at skip={skip} within {bounds.deadline_s:g} s "
                    "(ETL_SOURCE_DEADLINE_S, a total per response): it is stalled or trickling. The page is retried; "
                    "if the source is only slow, raise ETL_SOURCE_DEADLINE_S"
                )
            if now - last_alive >= _ALIVE_EVERY_S:
                alive()
                last_alive = now
    finally:
        # Whatever ended the wait, the thread stops at its next chunk and closes the connection.
        ex.abandoned.set()


def fetch_once(
    client: httpx.Client, url: str, skip: int, limit: int, bounds: Bounds, alive: Callable[[], None] = lambda: None
) -> Page:
    """One request, bounded by ``bounds``; SourceUnavailable on anything a retry may fix, SourceRefused otherwise."""
    ex = _Exchange()
    context = contextvars.copy_context()  # the run id in log lines and the trace span follow the request
    threading.Thread(
        target=context.run, args=(_exchange, client, url, skip, limit, bounds, ex), name="source-request", daemon=True
    ).start()
    _await(ex, skip, bounds, alive)
    if ex.error is not None:
        raise ex.error
    assert ex.headers is not None
    body = as_utf8(ex.body, skip)
    if ex.status != 200:
        said = _said(body)
        raise SourceUnavailable(
            f"HTTP {ex.status} for skip={skip}{said}", parse_retry_after(ex.headers.get("Retry-After"))
        )
    try:
        # Tolerant: one record with a bad value is quarantined (and dead-lettered later), not the whole page.
        page = read_page(body)
    except ValueError as exc:
        raise SourceUnavailable(
            f"page at skip={skip} is not JSON: {exc} (it starts with {ex.body[:16]!r}); check that ETL_SOURCE_URL "
            "is a JSON API of users"
        ) from exc
    if not isinstance(page, dict) or not isinstance(page.get("users"), list):
        raise SourceUnavailable(
            f"the source answered HTTP 200 for skip={skip} without a 'users' list, {_describe(page)}. The page is "
            "retried; check ETL_SOURCE_URL and the source's access (key, quota)"
        )
    users = page["users"]
    if len(users) > limit:
        raise SourceRefused(
            f"the source answered {len(users)} users for limit={limit} at skip={skip}: it does not honour the paging "
            "parameters, so its pages cannot be put together. Point ETL_SOURCE_URL at a DummyJSON-compatible "
            "endpoint (limit and skip)"
        )
    total = page.get("total")
    if not isinstance(total, int) or isinstance(total, bool) or total < 0:
        raise SourceUnavailable(f"page at skip={skip} has no valid 'total'")
    return Page(users=users, total=total)


def as_utf8(body: bytes, skip: int) -> bytes:
    """The body as UTF-8 without a byte order mark, which RFC 8259 (8.1) lets a parser ignore.

    UTF-16 and UTF-32 text (RFC 7159 allowed them; RFC 8259 section 9 lets a parser accept more than it
    must), told by its BOM or its zero bytes as the standard library does, is transcoded: the page is read.
    """
    encoding = json.detect_encoding(body)
    if encoding == "utf-8":
        return body
    if encoding == "utf-8-sig":
        return body[3:]
    try:
        text = body.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise SourceUnavailable(
            f"page at skip={skip} is not JSON: it looks like {encoding} but is not ({exc}; it starts with bytes "
            f"{body[:4].hex(' ')}); check that ETL_SOURCE_URL is a JSON API of users"
        ) from exc
    log.info("page transcoded to UTF-8", skip=skip, encoding=encoding)
    # A lone surrogate becomes its JSON escape, so the record holding it is quarantined as such, not the page.
    return _SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text.removeprefix("\ufeff")).encode()


def _said(body: bytes) -> str:
    """``: the source said '...'`` when an error answer carries a JSON message, else nothing."""
    try:
        message = source_message(orjson.loads(body))
    except orjson.JSONDecodeError:
        return ""
    return f", saying {message!r}" if message else ""


class _Wait:
    """The configured delay for this attempt, raised to the server's Retry-After (capped)."""

    def __init__(self, delays: list[float], retry_after_max_s: float) -> None:
        self.delays = delays
        self.cap = retry_after_max_s

    def __call__(self, state: RetryCallState) -> float:
        delay = self.delays[min(state.attempt_number, len(self.delays)) - 1]
        exc = state.outcome.exception() if state.outcome else None
        if isinstance(exc, SourceUnavailable) and exc.retry_after_s is not None:
            delay = max(delay, min(exc.retry_after_s, self.cap))
        return delay


def _sleeper(alive: Callable[[], None]) -> Callable[[float], None]:
    """``retry.sleep`` (SIGTERM ends it) in slices, telling the run it is alive between them (lease, heartbeat)."""

    def sleep(seconds: float) -> None:
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            retry.sleep(min(left, _ALIVE_EVERY_S))
            alive()

    return sleep


def fetch_page(
    client: httpx.Client,
    url: str,
    skip: int,
    limit: int,
    delays: list[float],
    retry_after_max_s: float,
    bounds: Bounds,
    alive: Callable[[], None] = lambda: None,
    on_retry: Callable[[float], None] | None = None,
) -> Page:
    """The page at ``skip``, retried ``len(delays)`` times; SourceFailed when they are exhausted or cannot help.

    ``alive`` is called about every second while the page is awaited (request or retry wait), so a slow source
    neither lets the run's lease lapse nor makes the heartbeat stale. ``on_retry`` is told each wait before a
    retry (concurrent fetchers all hold back for it).
    """

    def before_sleep(state: RetryCallState) -> None:
        metrics.SOURCE_RETRIES.inc()
        if on_retry is not None:
            on_retry(state.upcoming_sleep)
        exc = state.outcome.exception() if state.outcome else None
        log.warning(
            "source request failed, retrying",
            skip=skip,
            attempt=state.attempt_number,
            wait_s=round(state.upcoming_sleep, 3),
            error=str(exc),
        )

    retrying = Retrying(
        sleep=_sleeper(alive),
        stop=stop_after_attempt(len(delays) + 1),
        wait=_Wait(delays, retry_after_max_s),
        retry=retry_if_exception_type(SourceUnavailable),
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(fetch_once, client, url, skip, limit, bounds, alive)
    except SourceUnavailable as exc:
        raise SourceFailed(
            f"source failed for the page at skip={skip} after {len(delays)} retries: {exc}. The run resumes from "
            "this page at the next try (python -m extractor once, or the service after ETL_RESUME_DELAY_S)"
        ) from exc
