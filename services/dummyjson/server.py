"""HTTP server answering /users like DummyJSON, with runtime fault switches under /_faults and /_stats."""

import base64
import functools
import json
import socket
import struct
import threading
import time
import zlib
from dataclasses import dataclass, fields, replace
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

import orjson

from dummyjson.users import break_user, clone_user, make_bad_user, make_user


# --- Paging faults and latency (the run's truth): how pages are cut, how far away the source is ---------------
@dataclass(frozen=True)
class Paging:
    """Switches of the pages themselves; POST /_faults sets them by these names (absent: the server's start values)."""

    ignore_skip: bool = False  # every page starts at the first user, whatever `skip` says
    overlap: int = 0  # every page starts this many users before `skip`
    total_ahead: int = 0  # `total` says this many users more than the list holds
    grow_per_request: int = 0  # the list grows by this many users at every /users request (generated users)
    latency_ms: float = 0.0  # added before every /users answer (a far-away source)
    max_limit: int = 0  # pages hold at most this many users whatever `limit` asks (0: no cap)

    def given(self, body: dict[str, Any]) -> "Paging":
        """These switches with the ones named in ``body`` changed."""
        changed = {f.name: type(getattr(self, f.name))(body[f.name]) for f in fields(self) if f.name in body}
        return replace(self, **changed)

    def start(self, skip: int) -> int:
        """Where the page asked at ``skip`` really starts."""
        return 0 if self.ignore_skip else max(skip - self.overlap, 0)


# --- end of the paging faults -------------------------------------------------------------------------------


class Source:
    """The data set and the faults; shared by the request threads under one lock."""

    def __init__(
        self,
        count: int,
        seed: int = 0,
        bad_every: int = 0,
        users: list[Any] | None = None,
        pool: int = 0,
        paging: Paging | None = None,
    ):
        self.users = users
        # With a pool, users past the first ``pool`` are cloned from them (cheap; for large benchmarks).
        self.pool = [make_user(i + 1, seed) for i in range(min(pool, count))] if pool > 0 else []
        self.count = len(users) if users is not None else count
        self.seed = seed
        self.bad_every = bad_every
        self.lock = threading.Lock()
        self.requests: list[dict[str, Any]] = []
        # Each rule: {skip: int|None, status: int, times: int (-1 forever), retry_after: s,
        # delay_s: float (before the headers), body: "notjson"|None, body_b64: the exact bytes to answer (base64),
        # and the response faults of RESPONSE_FAULTS}; a request consumes the first rule that matches.
        self.rules: list[dict[str, Any]] = []
        self.total_delta = 0  # added to `total` after `total_delta_after` requests
        self.total_delta_after = 0
        # --- schema change switch (drift tests) ---
        # The changes every user is served with, as a changed API would: "add" (`nickname` added), "drop"
        # (`maidenName` dropped), "age_text" (`age` as text, "42"); true means all three.
        self.schema_change: frozenset[str] = frozenset()
        self.paging_default = self.paging = paging or Paging()

    def user(self, index: int) -> Any:
        """The user at 0-based ``index`` (id ``index + 1``); any JSON value, as given users may be malformed.

        Given users are served as they are; otherwise cloned from the pool or generated from ``seed``, every
        ``bad_every``-th one broken (``dummyjson.users``).
        """
        if self.users is not None:
            return self.users[index]
        uid = index + 1
        if self.pool and uid > len(self.pool):
            user = clone_user(self.pool[index % len(self.pool)], uid)
            if self.bad_every and uid % self.bad_every == 0:
                return break_user(user, uid // self.bad_every - 1)
            return user
        if self.bad_every and uid % self.bad_every == 0:
            return make_bad_user(uid, uid // self.bad_every - 1, self.seed)
        return make_user(uid, self.seed)

    def take_rule(self, skip: int) -> dict[str, Any] | None:
        """A copy of the first fault rule for a request at ``skip`` with uses left (one use taken); None if none."""
        with self.lock:
            for rule in self.rules:
                if rule.get("skip") not in (None, skip) or rule.get("times", 1) == 0:
                    continue
                if rule.get("times", 1) > 0:
                    rule["times"] = rule.get("times", 1) - 1
                return dict(rule)
        return None


def make_handler(source: Source) -> type[BaseHTTPRequestHandler]:
    """The request handler over ``source``.

    ``GET /users?limit=&skip=`` answers ``{users, total, skip, limit}`` as dummyjson.com does (``limit=0``:
    all the rest); ``POST /_faults`` sets the fault rules (``{rules, total_delta, total_delta_after,
    reset_stats, schema_change}``, see ``Source``); ``GET /_stats`` lists the requests received.
    """

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            url = urlparse(self.path)
            if url.path == "/_stats":
                with source.lock:
                    self._json(200, {"requests": list(source.requests)})
                return
            if url.path.rstrip("/") != "/users":
                self._json(404, {"message": f"Route {url.path} not found"})
                return
            q = parse_qs(url.query)
            try:
                limit = int(q.get("limit", ["30"])[0])
                skip = int(q.get("skip", ["0"])[0])
            except ValueError:
                self._json(400, {"message": "limit and skip must be integers"})
                return
            paging = source.paging
            if paging.latency_ms:
                time.sleep(paging.latency_ms / 1000)
            with source.lock:
                source.requests.append({"skip": skip, "limit": limit, "at": time.time()})
                n_requests = len(source.requests)
                if paging.grow_per_request and source.users is None:
                    source.count += paging.grow_per_request
            rule = source.take_rule(skip)
            if rule and rule.get("delay_s"):
                time.sleep(float(rule["delay_s"]))
            if rule and rule.get("status", 200) != 200:
                headers = {}
                if rule.get("retry_after") is not None:
                    headers["Retry-After"] = retry_after(rule)
                self._json(int(rule["status"]), {"message": "injected failure"}, headers)
                return
            if rule and rule.get("body_b64") is not None:
                # Bytes no JSON writer would produce (lone surrogates, NaN, bytes that are not UTF-8...).
                self._page(rule, base64.b64decode(rule["body_b64"]))
                return
            if rule and rule.get("body") == "notjson":
                self._raw(200, b"<html>502 Bad Gateway</html>", "text/html")
                return
            skip = max(skip, 0)
            first = paging.start(skip)
            if paging.max_limit:
                limit = min(limit, paging.max_limit) if limit > 0 else paging.max_limit
            end = source.count if limit <= 0 else min(source.count, first + limit)
            users = [source.user(i) for i in range(first, end)] if first < source.count else []
            if rule and rule.get("users_per_page") is not None:
                users = oversized_page(source, skip, int(rule["users_per_page"]))
            if source.schema_change:
                users = [changed_shape(u, source.schema_change) for u in users]
            total = source.count + paging.total_ahead
            if source.total_delta and n_requests > source.total_delta_after:
                total += source.total_delta
            # orjson: serialising a page of 100 users with json.dumps costs more than the pipeline's work on it.
            self._page(rule, orjson.dumps({"users": users, "total": total, "skip": skip, "limit": len(users)}))

        def do_POST(self) -> None:
            if urlparse(self.path).path != "/_faults":
                self._json(404, {"message": "not found"})
                return
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
            with source.lock:
                source.rules = list(body.get("rules", []))
                source.total_delta = int(body.get("total_delta", 0))
                source.total_delta_after = int(body.get("total_delta_after", 0))
                source.paging = source.paging_default.given(body)
                if body.get("reset_stats"):
                    source.requests.clear()
                # --- schema change switch (drift tests) ---
                change = body.get("schema_change") or []
                source.schema_change = frozenset(SCHEMA_CHANGES if change is True else change) & SCHEMA_CHANGES
            self._json(200, {"ok": True})

        def _page(self, rule: dict[str, Any] | None, body: bytes) -> None:
            """A page's bytes at status 200, as the rule's response faults (RESPONSE_FAULTS) make them."""
            body, headers = faulty_body(rule or {}, body)
            status = 200
            if (rule or {}).get("redirect"):
                status, headers["Location"] = 302, self.path
            rate = float((rule or {}).get("trickle_bps") or 0)
            if rate <= 0:
                self._raw(status, body, "application/json", headers)
                return
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in headers.items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.flush()
            step = max(1, int(rate / 10))
            for at in range(0, len(body), step):
                self.wfile.write(body[at : at + step])
                self.wfile.flush()
                time.sleep(step / rate)

        def _json(self, code: int, obj: Any, headers: dict[str, str] | None = None) -> None:
            self._raw(code, json.dumps(obj).encode(), "application/json", headers)

        def _raw(self, code: int, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    return Handler


# ---- Response faults: bytes of an answer that misbehave (extractor/source.py must survive them) -----------
RESPONSE_FAULTS = """Rule keys that change how an answer's bytes look (tests/faults/test_source_responses.py):
  users_per_page: n    answer n users from skip on, whatever limit asks
  bom: true            a UTF-8 byte order mark before the body
  pad: " \r\n\t"        this white space before and after the body
  charset: name        the body in this encoding (utf-16 and utf-32 with their BOM, utf-16-le without...)
  encoding: name       Content-Encoding: gzip and deflate compress the body (deflate-raw: deflate without its
                       zlib wrapper, labelled deflate); any other name (br, zstd...) only labels it
  label_only: true     encoding only labels the body (body_b64 already encoded, or a corrupt one)
  bomb_bytes: n        with encoding gzip (the default) or deflate: the page, then spaces up to n bytes once
                       inflated (1 GiB is about 1 MB on the wire)
  redirect: true       status 302 to the same URL, with the body as the other keys make it (once the rule is
                       used up, the redirected request gets the page)
  trickle_bps: r       after the headers, the body at r bytes per second (delay_s delays the headers)
  retry_after_form: f  with status and retry_after (seconds from now): Retry-After as an HTTP-date in form f,
                       one of imf (Sun, 06 Nov 1994 08:49:37 GMT), rfc850 (Sunday, 06-Nov-94 08:49:37 GMT)
                       or asctime (Sun Nov  6 08:49:37 1994)
"""


def retry_after(rule: dict[str, Any]) -> str:
    """The Retry-After value of a rule: its seconds, or the HTTP-date that far ahead in ``retry_after_form``."""
    form = rule.get("retry_after_form")
    if not form:
        return str(rule["retry_after"])
    when = datetime.now(timezone.utc) + timedelta(seconds=float(rule["retry_after"]))
    if form == "imf":
        return format_datetime(when, usegmt=True)
    if form == "rfc850":
        return when.strftime("%A, %d-%b-%y %H:%M:%S GMT")
    if form == "asctime":
        return f"{when:%a %b} {when.day:2d} {when:%H:%M:%S %Y}"
    raise ValueError(f"unknown retry_after_form {form!r}")


def oversized_page(source: Source, skip: int, n: int) -> list[Any]:
    """``n`` users from ``skip`` on (given users repeat when there are not enough)."""
    if source.users is not None:
        return [source.users[i % len(source.users)] for i in range(skip, skip + n)]
    return [source.user(i) for i in range(skip, skip + n)]


def faulty_body(rule: dict[str, Any], body: bytes) -> tuple[bytes, dict[str, str]]:
    """``body`` and extra headers after the rule's byte faults (bom, pad, encoding, bomb_bytes)."""
    headers: dict[str, str] = {}
    pad = str(rule.get("pad", "")).encode()
    body = (b"\xef\xbb\xbf" if rule.get("bom") else b"") + pad + body + pad
    if rule.get("charset"):
        body = body.decode("utf-8", "surrogatepass").encode(str(rule["charset"]), "surrogatepass")
    encoding = rule.get("encoding") or ("gzip" if rule.get("bomb_bytes") else None)
    if encoding:
        headers["Content-Encoding"] = "deflate" if encoding == "deflate-raw" else str(encoding)
    if rule.get("bomb_bytes"):
        return bomb(body, int(rule["bomb_bytes"]), str(encoding)), headers
    if encoding in ("gzip", "x-gzip", "deflate", "deflate-raw") and not rule.get("label_only"):
        return compress(body, str(encoding)), headers
    return body, headers


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\xff"
_ZLIB_HEADER = b"\x78\xda"


def compress(data: bytes, encoding: str) -> bytes:
    """``data`` as a gzip, deflate (zlib) or deflate-raw body."""
    wbits = {"gzip": 31, "x-gzip": 31, "deflate": 15, "deflate-raw": -15}[encoding]
    c = zlib.compressobj(6, zlib.DEFLATED, wbits)
    return c.compress(data) + c.flush()


@functools.lru_cache(maxsize=4)
def bomb(body: bytes, size: int, encoding: str) -> bytes:
    """``body`` then spaces up to ``size`` bytes, as a gzip or deflate body about ``size`` / 1000 bytes long.

    Built in a second for 1 GiB: after a full flush the compressor starts afresh, so every 1 MiB block of
    spaces compresses to the same bytes, computed once; only the checksum reads the whole inflated size.
    """
    block = b" " * (1 << 20)
    blocks, rest = divmod(max(size - len(body), 0), len(block))
    c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    head = c.compress(body) + c.flush(zlib.Z_FULL_FLUSH)
    one = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH) if blocks else b""
    deflated = head + one * blocks + c.compress(block[:rest]) + c.flush()
    check = zlib.crc32 if encoding == "gzip" else zlib.adler32
    value = check(body, 0 if encoding == "gzip" else 1)
    for _ in range(blocks):
        value = check(block, value)
    value = check(block[:rest], value)
    if encoding == "gzip":
        inflated = len(body) + blocks * len(block) + rest
        return _GZIP_HEADER + deflated + struct.pack("<II", value, inflated & 0xFFFFFFFF)
    return _ZLIB_HEADER + deflated + struct.pack(">I", value)


# ---- end of response faults ----------------------------------------------------------------------------------
# --- schema change switch (drift tests) ---
SCHEMA_CHANGES = frozenset({"add", "drop", "age_text"})


def changed_shape(user: Any, changes: frozenset[str] = SCHEMA_CHANGES) -> Any:
    """``user`` as a changed API would serve it: ``nickname`` added, ``maidenName`` dropped, ``age`` as text."""
    if not isinstance(user, dict):
        return user
    changed = {k: v for k, v in user.items() if k != "maidenName" or "drop" not in changes}
    if "add" in changes:
        changed["nickname"] = str(user.get("firstName", ""))[:3]
    if "age_text" in changes and "age" in user:
        changed["age"] = str(user["age"])
    return changed


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(
        self, request: socket.socket | tuple[bytes, socket.socket], client_address: tuple[str, int]
    ) -> None:
        # Clients that time out or die mid-response (fault tests do it on purpose) are not errors here.
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            super().handle_error(request, client_address)


def build(host: str, port: int, source: Source) -> ThreadingHTTPServer:
    """A server bound to ``host:port`` (0: a free port), not yet serving; its threads are daemons."""
    return _Server((host, port), make_handler(source))
