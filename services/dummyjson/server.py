"""HTTP server answering /users like DummyJSON, with runtime fault switches under /_faults and /_stats."""

import base64
import json
import socket
import threading
import time
from dataclasses import dataclass, fields, replace
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
        # delay_s: float, body: "notjson"|None, body_b64: the exact bytes to answer (base64)};
        # a request consumes the first rule that matches.
        self.rules: list[dict[str, Any]] = []
        self.total_delta = 0  # added to `total` after `total_delta_after` requests
        self.total_delta_after = 0
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
    reset_stats}``, see ``Source``); ``GET /_stats`` lists the requests received.
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
                    headers["Retry-After"] = str(rule["retry_after"])
                self._json(int(rule["status"]), {"message": "injected failure"}, headers)
                return
            if rule and rule.get("body_b64") is not None:
                # Bytes no JSON writer would produce (lone surrogates, NaN, bytes that are not UTF-8...).
                self._raw(200, base64.b64decode(rule["body_b64"]), "application/json")
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
            total = source.count + paging.total_ahead
            if source.total_delta and n_requests > source.total_delta_after:
                total += source.total_delta
            # orjson: serialising a page of 100 users with json.dumps costs more than the pipeline's work on it.
            self._raw(
                200,
                orjson.dumps({"users": users, "total": total, "skip": skip, "limit": len(users)}),
                "application/json",
            )

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
            self._json(200, {"ok": True})

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
