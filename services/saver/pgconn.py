"""A psycopg 3 connection behind the part of sqlite3's connection interface the saver's SQL code uses.

The saver's SQL is written once, with ``?`` placeholders and portable statements (``INSERT ... ON CONFLICT``);
this adapter is where PostgreSQL differs in the driver, not in the SQL: the placeholder style, rows addressable
by index and by name (as ``sqlite3.Row``), ``in_transaction``, SQLite's ``BEGIN IMMEDIATE`` (PostgreSQL locks
rows, not the database: a plain ``BEGIN``), and errors raised as the PEP 249 class of the same name in
``sqlite3`` so that the saver's handlers (permanent errors, a full disk) read one hierarchy on both engines.

Bulk rows (``executemany`` of an ``INSERT ... ON CONFLICT DO NOTHING`` inside a transaction) go in as PostgreSQL
loads best: COPY into a temporary staging table per target, then one ``INSERT ... SELECT ... ON CONFLICT DO
NOTHING`` per target at COMMIT (measured against executemany and pipeline mode in docs/scaling.md).
"""

import itertools
import re
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
import psycopg.rows
from psycopg import errors
from psycopg.pq import TransactionStatus

from etl_common.db import qmark_to_format

# psycopg's PEP 249 classes and sqlite3's of the same name, most specific first.
_ERRORS: tuple[tuple[type[psycopg.Error], type[sqlite3.Error]], ...] = (
    (psycopg.IntegrityError, sqlite3.IntegrityError),
    (psycopg.DataError, sqlite3.DataError),
    (psycopg.OperationalError, sqlite3.OperationalError),
    (psycopg.ProgrammingError, sqlite3.ProgrammingError),
    (psycopg.NotSupportedError, sqlite3.NotSupportedError),
    (psycopg.InternalError, sqlite3.InternalError),
    (psycopg.InterfaceError, sqlite3.InterfaceError),
    (psycopg.DatabaseError, sqlite3.DatabaseError),
)
# The statements whose text differs: SQLite's write lock at BEGIN has no PostgreSQL twin (rows are locked as
# written); a reader's BEGIN asks for one snapshot for all its reads, which PostgreSQL gives at REPEATABLE READ.
_STATEMENTS = {
    "BEGIN IMMEDIATE": "BEGIN",
    "BEGIN": "BEGIN ISOLATION LEVEL REPEATABLE READ",
}
# The bulk statement COPY serves: every column a parameter, duplicates skipped (the saver's page rows).
_INSERT_OR_NOTHING = re.compile(
    r"\s*INSERT\s+INTO\s+(\w+)\s*\(([\w\s,]+)\)\s*VALUES\s*\(([?,\s]+)\)\s*ON\s+CONFLICT\s+DO\s+NOTHING\s*",
    re.IGNORECASE,
)
# Rows fetched at a time by ``Connection.stream`` (a run's file lines: a few hundred bytes each).
FETCH_ROWS = 2000
# The tables and views whose rows depend on a table (its views): a statement naming one reads staged rows.
_DEPENDENTS = """
SELECT DISTINCT v.relname FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid
JOIN pg_class v ON v.oid = r.ev_class WHERE d.refobjid = %s::regclass
"""


class Row(tuple[Any, ...]):
    """A result row read by position or by column name, as ``sqlite3.Row``."""

    _index: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        """The column names, in order."""
        return list(self._index)


def _row_factory(cursor: "psycopg.Cursor[Any]") -> Any:
    names = [c.name for c in cursor.description or ()]
    index: dict[str, int] = {}
    for i, name in enumerate(names):
        index.setdefault(name, i)  # the first of a repeated name, as sqlite3

    def make(values: Sequence[Any]) -> Row:
        row = Row(values)
        row._index = index
        return row

    return make


def translated(exc: psycopg.Error) -> sqlite3.Error:
    """``exc`` as the sqlite3 class of the same PEP 249 name; a full disk says so as SQLite does."""
    text = str(exc).strip()
    if isinstance(exc, errors.DiskFull):
        return sqlite3.OperationalError(f"database or disk is full (PostgreSQL server: {text})")
    if isinstance(exc, (errors.UndefinedTable, errors.UndefinedColumn)):
        return sqlite3.OperationalError(text)  # SQLite's class for "no such table/column" (not migrated yet)
    for pg, lite in _ERRORS:
        if isinstance(exc, pg):
            return lite(text)
    return sqlite3.Error(text)


class Cursor:
    """The result of one statement: rows, ``rowcount``; fetched as ``sqlite3.Cursor``'s are."""

    def __init__(self, cursor: "psycopg.Cursor[Any]") -> None:
        self._cursor = cursor

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    def fetchone(self) -> Any:
        return self._cursor.fetchone() if self._cursor.description else None

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall() if self._cursor.description else []

    def fetchmany(self, size: int) -> list[Any]:
        return self._cursor.fetchmany(size) if self._cursor.description else []

    def __iter__(self) -> Iterator[Any]:
        return iter(self.fetchall())


class _Stage:
    """A temporary table holding one target's rows of the open transaction until they are inserted."""

    def __init__(self, table: str, columns: str, name: str, names: set[str]) -> None:
        self.table, self.columns, self.name = table, columns, name
        self.names = names  # the target and the views over it: a statement naming one reads the staged rows
        self.pending = 0  # rows copied in since the last insert
        self.inserted = 0  # rows the last insert added (ON CONFLICT DO NOTHING skips the others)


class _StagedCursor:
    """What ``executemany`` returns for staged rows: no result rows; ``rowcount`` inserts them to count them."""

    description = None

    def __init__(self, conn: "Connection", stage: _Stage) -> None:
        self._conn, self._stage = conn, stage

    @property
    def rowcount(self) -> int:
        if self._stage.pending:
            self._conn._insert_staged(self._stage, final=False)
        return self._stage.inserted

    def fetchone(self) -> Any:
        return None

    def fetchall(self) -> list[Any]:
        return []

    def fetchmany(self, size: int) -> list[Any]:
        return []

    def __iter__(self) -> Iterator[Any]:
        return iter(())


class Connection:
    """A psycopg connection in autocommit mode (transactions are explicit, as the saver's SQLite ones)."""

    def __init__(self, conn: "psycopg.Connection[Any]", rows_by_name: bool = True) -> None:
        self._conn = conn
        self._rows_by_name = rows_by_name
        self._stages: dict[tuple[str, str], _Stage] = {}  # by (table, columns): created once per connection
        self._streams = itertools.count()  # names of the server-side cursors (unique on the connection)
        self.fetch_rows = FETCH_ROWS  # rows per FETCH of ``stream``: the most of a result held in memory at once

    @property
    def row_factory(self) -> Any:
        return Row if self._rows_by_name else None

    @row_factory.setter
    def row_factory(self, value: Any) -> None:
        self._rows_by_name = value is not None  # None: plain tuples, as sqlite3

    @property
    def in_transaction(self) -> bool:
        return self._conn.info.transaction_status != TransactionStatus.IDLE

    @property
    def raw(self) -> "psycopg.Connection[Any]":
        """The psycopg connection itself (COPY, migrations)."""
        return self._conn

    def _cursor(self) -> "psycopg.Cursor[Any]":
        return self._conn.cursor(row_factory=_row_factory) if self._rows_by_name else self._conn.cursor()

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Cursor:
        """Run one statement written with ``?`` placeholders."""
        word = sql.strip().upper()
        text = _STATEMENTS.get(word, sql)
        if word == "ROLLBACK":
            self._forget_staged()
        elif word == "COMMIT":
            try:
                self._insert_all_staged()
            except sqlite3.Error:
                # The COMMIT failed: end the transaction, as a failed COMMIT would, so that the next one can begin.
                self.execute("ROLLBACK")
                raise
        else:
            self._insert_staged_named_in(sql)
        cursor = self._cursor()
        try:
            cursor.execute(qmark_to_format(text), tuple(params))
        except psycopg.Error as exc:
            raise translated(exc) from exc
        return Cursor(cursor)

    def stream(self, sql: str, params: Sequence[Any] = ()) -> Iterator[Any]:
        """The rows of one query, ``fetch_rows`` at a time through a server-side cursor: the saver holds no more
        of a result of any size (sqlite3's cursor iterates so); outside a transaction, in one of its own."""
        self._insert_staged_named_in(sql)
        own = not self.in_transaction
        try:
            if own:
                self._conn.execute(_STATEMENTS["BEGIN"])  # one snapshot for the whole result
            factory = _row_factory if self._rows_by_name else psycopg.rows.tuple_row
            with self._conn.cursor(name=f"etl_stream_{next(self._streams)}", row_factory=factory) as cursor:
                cursor.execute(qmark_to_format(sql), tuple(params))
                while rows := cursor.fetchmany(self.fetch_rows):
                    yield from rows
            if own:
                self._conn.execute("COMMIT")
        except psycopg.Error as exc:
            raise translated(exc) from exc
        finally:
            if own and self.in_transaction:  # a failure, or the caller stopped reading
                self._conn.execute("ROLLBACK")

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Cursor | _StagedCursor:
        """Run one statement once per parameter row; ``rowcount`` is the sum.

        An ``INSERT ... ON CONFLICT DO NOTHING`` of parameters only, in a transaction, is copied into the target's
        staging table and inserted at COMMIT (or before a statement that names the target, or when its rowcount is
        read); any other statement is pipelined by psycopg.
        """
        rows = [tuple(p) for p in seq]
        bulk = _INSERT_OR_NOTHING.fullmatch(sql)
        if bulk is None or not self.in_transaction:
            cursor = self._cursor()
            try:
                cursor.executemany(qmark_to_format(sql), rows)
            except psycopg.Error as exc:
                raise translated(exc) from exc
            return Cursor(cursor)
        stage = self._stage(bulk[1], ", ".join(c.strip() for c in bulk[2].split(",")))
        if rows:
            try:
                with (
                    self._conn.cursor() as cursor,
                    cursor.copy(f"COPY {stage.name} ({stage.columns}) FROM STDIN") as copy,
                ):
                    for row in rows:
                        copy.write_row(row)
            except psycopg.Error as exc:
                raise translated(exc) from exc
            stage.pending += len(rows)
        return _StagedCursor(self, stage)

    def _stage(self, table: str, columns: str) -> _Stage:
        """The staging table of ``table``'s ``columns``: the columns' types, no constraints, emptied at commit."""
        stage = self._stages.get((table, columns))
        if stage is not None:
            return stage
        name = f"etl_stage_{table}_{zlib.crc32(columns.encode()):08x}"  # the same after a rollback forgot it
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(
                    f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} ON COMMIT DELETE ROWS AS "
                    f"SELECT {columns} FROM {table} WITH NO DATA"
                )
                views = {r[0] for r in cursor.execute(_DEPENDENTS, (table,)).fetchall()}
        except psycopg.Error as exc:
            raise translated(exc) from exc
        stage = self._stages[(table, columns)] = _Stage(table, columns, name, {table, *views})
        return stage

    def _insert_staged(self, stage: _Stage, final: bool) -> None:
        """Insert the staged rows into their table; empty the stage unless the commit does it (ON COMMIT)."""
        try:
            with self._conn.cursor() as cursor:
                cursor.execute(
                    f"INSERT INTO {stage.table} ({stage.columns}) SELECT {stage.columns} FROM {stage.name} "
                    "ON CONFLICT DO NOTHING"
                )
                stage.inserted = cursor.rowcount
                if not final:
                    cursor.execute(f"DELETE FROM {stage.name}")
        except psycopg.Error as exc:
            raise translated(exc) from exc
        stage.pending = 0

    def _insert_staged_named_in(self, sql: str) -> None:
        """Insert the staged rows first when ``sql`` reads or writes their table (or a view over it)."""
        if any(s.pending and any(n in sql for n in s.names) for s in self._stages.values()):
            self._insert_all_staged(final=False)

    def _insert_all_staged(self, final: bool = True) -> None:
        for stage in self._stages.values():
            if stage.pending:
                self._insert_staged(stage, final)

    def _forget_staged(self) -> None:
        """After a rollback: no rows pending, and a stage created in the transaction is gone (made again on use)."""
        for stage in self._stages.values():
            stage.pending = 0
        self._stages.clear()

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
