"""Answers repeated GETs of the small, hot routes from memory while the database is unchanged.

A plain ASGI layer in front of the router: a hit skips FastAPI's routing, validation and
dependencies, which cost more than the query. The key is the path, the query string and the
database's ``data_version`` (it changes on every commit of the saver), so an answer is never
stale. Only 200 answers are kept, and only after the bearer token has been checked.
"""

import sqlite3
from typing import Any

from api.db import Database, NotReady
from api.deps import token_ok
from api.settings import ApiSettings

CACHED_PATHS = frozenset(("/etl_runs", "/summary"))
MAX_ENTRIES = 512
MAX_BODY_BYTES = 256 * 1024


class ResponseCache:
    def __init__(self, app: Any, settings: ApiSettings, db: Database) -> None:
        self.app, self.settings, self.db = app, settings, db
        self.entries: dict[tuple[str, bytes], tuple[int, list, bytes, Any]] = {}

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "GET" or scope["path"] not in CACHED_PATHS:
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        auth = headers.get(b"authorization")
        try:
            authorized = token_ok(self.settings, auth.decode("latin-1") if auth else None)
            version = self.db.version() if authorized else None
        except (NotReady, sqlite3.Error):  # the route itself gives the right error answer
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

    async def _fill(self, key, version: int, scope, receive, send) -> None:
        start: dict = {}
        chunks: list[bytes] = []

        async def capture(message) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))
            await send(message)

        await self.app(scope, receive, capture)
        body = b"".join(chunks)
        if start.get("status") == 200 and len(body) <= MAX_BODY_BYTES:
            if len(self.entries) >= MAX_ENTRIES:
                self.entries.clear()
            self.entries[key] = (version, list(start.get("headers", [])), body, scope.get("route"))
