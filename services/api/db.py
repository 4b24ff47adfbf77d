"""Read-only access to the SQLite file: one connection per thread, a data version, a small response cache."""

import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from etl_common.db import connect_reader


class NotReady(Exception):
    """The database file does not exist yet or has no schema (answered 503)."""


class Database:
    """Per-thread read-only connections (mode=ro, query_only) to one SQLite file.

    WAL readers never block the saver; statements are always run to completion so no read
    transaction stays open and stalls the saver's checkpoints.
    """

    def __init__(self, path: str, cache_entries: int = 256) -> None:
        self.path = Path(path)
        self._local = threading.local()
        self._cache: dict[Any, tuple[int, Any]] = {}
        self._cache_entries = cache_entries

    def conn(self) -> sqlite3.Connection:
        """This thread's connection, opened on first use; NotReady while the saver has not made the file."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def connect(self) -> sqlite3.Connection:
        """A new read-only connection of tuples, for the caller to close; NotReady as for ``conn``."""
        if not self.path.exists():
            raise NotReady("the database does not exist yet; no run has been loaded")
        try:
            conn = connect_reader(self.path)
            conn.row_factory = None  # tuples: rows are turned into dicts once, by the routes
            conn.execute("SELECT 1 FROM etl_runs LIMIT 0").fetchall()
        except sqlite3.Error as exc:
            raise NotReady("the database is not ready yet") from exc
        return conn

    def version(self) -> int:
        """Changes whenever another connection (the saver) commits: the key of every cached answer."""
        version: int = self.conn().execute("PRAGMA data_version").fetchone()[0]
        return version

    def rows(self, sql: str, args: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and all rows of one query."""
        cur = self.conn().execute(sql, args)
        rows = cur.fetchall()
        return [d[0] for d in cur.description], rows

    def dicts(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        """All rows of one query as column -> value dicts."""
        cols, rows = self.rows(sql, args)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def scalar(self, sql: str, args: Any = ()) -> Any:
        """The first column of the first row; None when there is no row."""
        rows = self.conn().execute(sql, args).fetchall()  # run to completion: no read lock left behind
        return rows[0][0] if rows else None

    def cache_get(self, key: Any, version: int) -> Any:
        """The value cached under ``key`` for this data ``version``; None when absent or older."""
        hit = self._cache.get(key)
        return hit[1] if hit is not None and hit[0] == version else None

    def cache_put(self, key: Any, version: int, value: Any) -> None:
        """Cache ``value`` under ``key`` for ``version`` (None reads back as a miss); a full cache is emptied first."""
        if len(self._cache) >= self._cache_entries:
            self._cache.clear()  # rare and cheap: entries are rebuilt on demand
        self._cache[key] = (version, value)

    def cached(self, key: Any, version: int, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per data version and key (the cache is per process, bounded)."""
        value = self.cache_get(key, version)
        if value is None:
            value = compute()
            self.cache_put(key, version, value)
        return value
