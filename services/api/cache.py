"""Answers repeated GETs of the read routes from memory while the database is unchanged.

A plain ASGI layer in front of the router: a hit skips FastAPI's routing, validation and
dependencies, which cost more than the query. The key is the path, the query string and the
database's ``data_version`` (it changes on every commit of the saver), so an answer is never
stale. Only 200 answers are kept, and only after the bearer token has been checked.
"""

from starlette.routing import BaseRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from api.db import Database
from api.deps import token_ok
from api.settings import ApiSettings

CACHED_PATHS = frozenset(("/etl_runs", "/summary", "/data/raw_users", "/data/processed_users", "/data/invalid_users"))
MAX_ENTRIES = 1024
MAX_BODY_BYTES = 256 * 1024  # a 50-row page is ~95 KB; bigger answers are not worth keeping
MAX_TOTAL_BYTES = 48 * 1024 * 1024  # per worker process


class ResponseCache:
    """The ASGI middleware: (path, query string) -> (data version, headers, body, matched route), per process."""

    def __init__(self, app: ASGIApp, settings: ApiSettings, db: Database) -> None:
        self.app, self.settings, self.db = app, settings, db
        self.entries: dict[tuple[str, bytes], tuple[int, list[tuple[bytes, bytes]], bytes, BaseRoute | None]] = {}
        self.total_bytes = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization")
        try:
            authorized = token_ok(self.settings, auth.decode("latin-1") if auth else None)
            version = self.db.version() if authorized else None
        except self.db.unreadable:  # the route itself gives the right error answer
            version = None
        if version is None:
            await self.app(scope, receive, send)
            return
        key = (scope["path"], scope["query_string"])
        hit = self.entries.get(key)
        if hit is not None and hit[0] == version:
            scope["route"] = hit[3]  # keeps the metrics' route label
            await send({"type": "http.response.start", "status": 200, "headers": hit[1]})
            await send({"type": "http.response.body", "body": hit[2]})
            return
        await self._fill(key, version, scope, receive, send)

    async def _fill(self, key: tuple[str, bytes], version: int, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200 and len(body) <= MAX_BODY_BYTES:
            if len(self.entries) >= MAX_ENTRIES or self.total_bytes + len(body) > MAX_TOTAL_BYTES:
                # Rare (the database changes daily) and cheap: entries are rebuilt on demand.
                self.entries.clear()
                self.total_bytes = 0
            old = self.entries.get(key)
            self.total_bytes += len(body) - (len(old[2]) if old else 0)
            self.entries[key] = (version, list(start.get("headers", [])), body, scope.get("route"))
