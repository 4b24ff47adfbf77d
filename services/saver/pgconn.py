"""A psycopg 3 connection behind the part of sqlite3's connection interface the saver's SQL code uses.

The saver's SQL is written once, with ``?`` placeholders and portable statements (``INSERT ... ON CONFLICT``);
this adapter is where PostgreSQL differs in the driver, not in the SQL: the placeholder style, rows addressable
by index and by name (as ``sqlite3.Row``), ``in_transaction``, SQLite's ``BEGIN IMMEDIATE`` (PostgreSQL locks
rows, not the database: a plain ``BEGIN``), and errors raised as the PEP 249 class of the same name in
``sqlite3`` so that the saver's handlers (permanent errors, a full disk) read one hierarchy on both engines.
"""

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import psycopg
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


class Connection:
    """A psycopg connection in autocommit mode (transactions are explicit, as the saver's SQLite ones)."""

    def __init__(self, conn: "psycopg.Connection[Any]", rows_by_name: bool = True) -> None:
        self._conn = conn
        self._rows_by_name = rows_by_name

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
        text = _STATEMENTS.get(sql.strip().upper(), sql)
        cursor = self._cursor()
        try:
            cursor.execute(qmark_to_format(text), tuple(params))
        except psycopg.Error as exc:
            raise translated(exc) from exc
        return Cursor(cursor)

    def executemany(self, sql: str, seq: Iterable[Sequence[Any]]) -> Cursor:
        """Run one statement once per parameter row (psycopg pipelines them); ``rowcount`` is the sum."""
        cursor = self._cursor()
        try:
            cursor.executemany(qmark_to_format(sql), [tuple(p) for p in seq])
        except psycopg.Error as exc:
            raise translated(exc) from exc
        return Cursor(cursor)

    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> "Connection":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
