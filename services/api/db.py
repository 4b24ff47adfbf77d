"""Read-only access to the database (SQLite or PostgreSQL): one connection per thread, a data version, a small cache."""

import hashlib
import sqlite3
import threading
from collections.abc import Callable, Iterator
from functools import lru_cache
from pathlib import Path
from typing import Any

from etl_common.db import Connection, DatabaseUrl, connect_reader, connection_problem, parse_url, qmark_to_format

# PostgreSQL's column types as the SQLite types the exports map (INTEGER, REAL, TEXT).
_AFFINITY = {
    "bigint": "INTEGER",
    "integer": "INTEGER",
    "smallint": "INTEGER",
    "double precision": "REAL",
    "real": "REAL",
}


class NotReady(Exception):
    """The database does not exist yet, cannot be reached, or has no schema (answered 503)."""


class Database:
    """Per-thread read-only connections to the database of ``target`` (a SQLite path or a parsed URL).

    SQLite: mode=ro and query_only; WAL readers never block the saver, and statements are always run
    to completion so no read transaction stays open and stalls the saver's checkpoints. PostgreSQL:
    autocommit in read-only transactions (each statement its own snapshot; nothing left open). The
    routes write their SQL with ``?`` placeholders; it is put in the engine's style here.
    """

    def __init__(self, target: str | Path | DatabaseUrl, cache_entries: int = 256) -> None:
        self.target = target if isinstance(target, DatabaseUrl) else parse_url("", target)
        self.dialect = self.target.dialect
        self.path = self.target.path  # the SQLite file; None on PostgreSQL
        # What a read can raise on this engine: answered 503 (try again) by api.errors.
        self.errors: tuple[type[Exception], ...] = (sqlite3.Error,)
        if self.dialect.name == "postgresql":
            import psycopg  # only here: it costs a process that reads SQLite ~23 MB

            self.errors = (sqlite3.Error, psycopg.Error)
        # Not readable now (no database yet, or an error of the moment): the route answers 503.
        self.unreadable: tuple[type[Exception], ...] = (NotReady, *self.errors)
        self._local = threading.local()
        self._cache: dict[Any, tuple[int, Any]] = {}
        self._cache_entries = cache_entries

    def conn(self) -> Connection:
        """This thread's connection, opened on first use (again after a lost one); NotReady as for ``connect``."""
        conn = getattr(self._local, "conn", None)
        if conn is not None and not isinstance(conn, sqlite3.Connection) and conn.broken:
            conn.close()  # the server restarted or the network dropped: a new one below
            conn = None
        if conn is None:
            conn = self.connect()
            self._local.conn = conn
        return conn

    def connect(self) -> Connection:
        """A new read-only connection of tuples, for the caller to close; NotReady while there is nothing to read."""
        if self.path is not None and not self.path.exists():
            raise NotReady("the database does not exist yet; no run has been loaded")
        conn: Connection | None = None
        try:
            conn = connect_reader(self.target)
            if isinstance(conn, sqlite3.Connection):
                conn.row_factory = None  # tuples: rows are turned into dicts once, by the routes
            conn.execute("SELECT 1 FROM etl_runs LIMIT 0").fetchall()
        except self.errors as exc:
            if conn is None and self.dialect.name == "postgresql":
                # Not "not ready yet": a refused login or a closed port is fixed by the operator, so say which.
                raise NotReady(f"the database cannot be read: {connection_problem(exc, self.target)}") from exc
            if conn is not None:
                conn.close()
            raise NotReady("the database is not ready yet") from exc
        return conn

    def version(self) -> int:
        """Changes whenever another connection (the saver) commits: the key of every cached answer.

        SQLite's ``data_version``; on PostgreSQL a digest of the current snapshot (its xmin, xmax and the
        transactions in progress), which changes when any write transaction starts or ends.
        """
        conn = self.conn()
        if isinstance(conn, sqlite3.Connection):
            version: int = conn.execute("PRAGMA data_version").fetchone()[0]
            return version
        snapshot = str(self.scalar("SELECT pg_current_snapshot()::text"))
        return int.from_bytes(hashlib.blake2b(snapshot.encode(), digest_size=8).digest(), "big")

    def execute(self, conn: Connection, sql: str, args: Any = ()) -> Any:
        """The cursor of ``sql`` (written with ``?``) run on ``conn`` with ``args``."""
        if isinstance(conn, sqlite3.Connection):
            return conn.execute(sql, args)
        return conn.execute(_format_style(sql), list(args))

    def rows(self, sql: str, args: Any = ()) -> tuple[list[str], list[tuple[Any, ...]]]:
        """Column names and all rows of one query."""
        cur = self.execute(self.conn(), sql, args)
        rows = cur.fetchall()
        return [d[0] for d in cur.description], rows

    def dicts(self, sql: str, args: Any = ()) -> list[dict[str, Any]]:
        """All rows of one query as column -> value dicts."""
        cols, rows = self.rows(sql, args)
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def scalar(self, sql: str, args: Any = ()) -> Any:
        """The first column of the first row; None when there is no row."""
        rows = self.execute(self.conn(), sql, args).fetchall()  # run to completion: no read lock left behind
        return rows[0][0] if rows else None

    def column_types(self, conn: Connection, table: str) -> dict[str, str]:
        """Column -> its SQLite type (INTEGER, REAL, TEXT...) as the table declares it, on either engine."""
        if isinstance(conn, sqlite3.Connection):
            return {row[1]: row[2].upper() for row in conn.execute(f"PRAGMA table_info({table})")}
        rows = conn.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = %s",
            (table,),
        ).fetchall()
        return {name: _AFFINITY.get(kind, "TEXT") for name, kind in rows}

    def stream(self, sql: str, args: Any, chunk_rows: int) -> Iterator[list[tuple[Any, ...]]]:
        """Every row of ``sql`` in lists of at most ``chunk_rows``, read through a connection of its own.

        One read snapshot for the whole selection, memory flat: SQLite's cursor steps through the
        result; PostgreSQL's is a server-side cursor in one read-only transaction. Opened at once
        (errors come from this call); closed at the end or when the iterator is dropped.
        """
        conn = self.connect()
        try:
            if isinstance(conn, sqlite3.Connection):
                cursor: Any = conn.execute(sql, args)
            else:
                conn.autocommit = False  # a named cursor lives in a transaction (read-only by the session default)
                cursor = conn.cursor(name="etl_export")
                cursor.execute(_format_style(sql), list(args))
        except BaseException:
            conn.close()
            raise
        return _chunks(conn, cursor, chunk_rows)

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


def _chunks(conn: Connection, cursor: Any, chunk_rows: int) -> Iterator[list[tuple[Any, ...]]]:
    try:
        while rows := cursor.fetchmany(chunk_rows):
            yield rows
    finally:
        conn.close()


@lru_cache(maxsize=512)
def _format_style(sql: str) -> str:
    """The routes' SQL (a few hundred distinct texts) in psycopg's placeholder style, converted once each."""
    return qmark_to_format(sql)
