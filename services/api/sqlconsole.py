"""The SQL console: one read-only SELECT, checked by SQLite's authorizer, with row, time and size limits.

Safety does not rest on parsing the text: SQLite itself reports every table and column a
statement reads (through ``*``, aliases, subqueries, views and CTEs alike) and every action it
takes, and the authorizer refuses anything outside the allow-list below. The connection is also
opened read-only (``mode=ro`` and ``query_only``), and a progress handler stops runaway queries.
"""

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from etl_common.db import connect_reader
from etl_common.runs import INSERTED_AT, ROW_COLUMNS, user_columns

_RUNS = (
    "id",
    "run_id",
    "run_timestamp",
    "raw_file",
    "processed_file",
    "dlq_file",
    "valid_count",
    "invalid_count",
    "status",
    "trigger",
    "started_at",
    "finished_at",
    "total_expected",
    "raw_count",
    "pages_expected",
    "error",
    "updated_at",
    "warnings",
    "rows_removed_at",
)
# Typed columns only (etl_common.runs.USER_COLUMNS): ``record`` holds masked secrets, ``raw_line`` unparsed text.
ALLOWED: dict[str, frozenset[str]] = {
    "etl_runs": frozenset(_RUNS),
    **{
        table: frozenset((*ROW_COLUMNS, *(c.name for c in user_columns(table) if c.console), INSERTED_AT))
        for table in ("raw_users", "processed_users", "invalid_users")
    },
}
# Functions that read files, expose pointers or are not needed for reporting.
_DENIED_FUNCTIONS = frozenset(("load_extension", "fts3_tokenizer", "readfile", "writefile", "edit"))
# Functions that can spend seconds in one step, where the progress handler never runs: printf's
# ``%.*c`` repeats a character one at a time whatever the length limit (SQLite 3.40: ~3 s for
# 9e8, 12 s for 2^31, returning NULL at the end).
_UNBOUNDED_FUNCTIONS = frozenset(("printf", "format"))
# Without Connection.setlimit (Python 3.10) nothing caps a value's length, so the functions that
# build a large value from a small number are refused as well.
_GROWTH_FUNCTIONS = frozenset(("zeroblob", "randomblob", "replace", "hex", "quote"))
_ACTION_NAMES = {
    1: "create index",
    2: "create table",
    3: "create temp index",
    4: "create temp table",
    5: "create temp trigger",
    6: "create temp view",
    7: "create trigger",
    8: "create view",
    9: "delete",
    10: "drop index",
    11: "drop table",
    12: "drop temp index",
    13: "drop temp table",
    14: "drop temp trigger",
    15: "drop temp view",
    16: "drop trigger",
    17: "drop view",
    18: "insert",
    19: "pragma",
    22: "transaction",
    23: "update",
    24: "attach",
    25: "detach",
    26: "alter table",
    27: "reindex",
    28: "analyze",
    29: "create virtual table",
    30: "drop virtual table",
    32: "savepoint",
}
# Table-valued functions over values the query already has.
_TABLE_FUNCTIONS = frozenset(("json_each", "json_tree"))
# Tables that exist whatever the schema; anything else not in the file is a CTE or subquery.
_BUILTIN_TABLES = ("sqlite_master", "sqlite_schema", "sqlite_temp_master", "sqlite_temp_schema")
# Longest string or blob a query may build (zeroblob, printf, group_concat...).
_MAX_VALUE_BYTES = 1_000_000
_LIMIT_LENGTH, _LIMIT_ATTACHED = 0, 7  # sqlite3.SQLITE_LIMIT_LENGTH / _ATTACHED (named in Python 3.11+)


class QueryRefused(Exception):
    """The statement is not allowed, is malformed, or ran out of time (answered 400 with the reason)."""


@dataclass
class Result:
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
    elapsed_ms: float


class _Guard:
    """The authorizer: remembers the first refusal so the answer can say what was refused."""

    def __init__(self, real_tables: set[str], length_capped: bool) -> None:
        self.reason: str | None = None
        self.real_tables = real_tables
        self.unbounded = _UNBOUNDED_FUNCTIONS if length_capped else _UNBOUNDED_FUNCTIONS | _GROWTH_FUNCTIONS

    def __call__(self, action: int, arg1: str | None, arg2: str | None, db: str | None, _src: str | None) -> int:
        if action == sqlite3.SQLITE_SELECT or action == sqlite3.SQLITE_RECURSIVE:
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_READ:
            table, column = arg1 or "", arg2 or ""
            if table.lower() in _TABLE_FUNCTIONS:
                return sqlite3.SQLITE_OK
            allowed = ALLOWED.get(table) if db in (None, "main") else None
            if allowed is None and not column and table.lower() not in self.real_tables:
                return sqlite3.SQLITE_OK  # count(*) over a CTE or subquery, not a stored table
            if allowed is None:
                return self._deny(
                    f"table {table!r} is not available in the console; the tables are {', '.join(sorted(ALLOWED))}"
                )
            if column and column.lower() not in allowed and column.lower() != "rowid":
                return self._deny(
                    f"column {table}.{column} is not available (only typed, unmasked columns are; name them "
                    f"instead of *); the columns of {table} are {', '.join(sorted(allowed))}"
                )
            return sqlite3.SQLITE_OK
        if action == sqlite3.SQLITE_FUNCTION:
            if (arg2 or "").lower() in _DENIED_FUNCTIONS:
                return self._deny(f"function {arg2}() is not allowed")
            if (arg2 or "").lower() in self.unbounded:
                return self._deny(
                    f"function {arg2}() is not allowed in the console: it can build a value past the "
                    f"{_MAX_VALUE_BYTES:,}-byte size limit in one step that the time limit cannot stop"
                )
            return sqlite3.SQLITE_OK
        if action in (9, 18, 23) and (arg1 or "").startswith("sqlite_"):
            # CREATE and DROP (and pragma table functions) first touch the schema table, and SQLite
            # stops at the first refusal, so that is the action reported.
            what = "a schema change or pragma: CREATE, DROP, ALTER or pragma_*()"
        else:
            what = _ACTION_NAMES.get(action, f"action {action}") + (f" on {arg1}" if arg1 else "")
        return self._deny(f"only one read-only SELECT statement is allowed ({what} refused)")

    def _deny(self, reason: str) -> int:
        if self.reason is None:
            self.reason = reason
        return sqlite3.SQLITE_DENY


def _cell(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()  # JSON has no bytes; hex keeps blobs readable and bounded
    return value


def _size(value: Any) -> int:
    return len(value) if isinstance(value, str) else 8


def run_query(path: str | Path, query: str, max_rows: int, timeout_ms: int, max_bytes: int) -> Result:
    """Run ``query`` on a fresh guarded read-only connection and return at most ``max_rows`` rows."""
    conn = connect_reader(path)
    conn.row_factory = None
    length_capped = False
    if hasattr(conn, "setlimit"):  # Python 3.11+; the authorizer refuses ATTACH anyway
        conn.setlimit(_LIMIT_LENGTH, _MAX_VALUE_BYTES)
        conn.setlimit(_LIMIT_ATTACHED, 0)
        length_capped = True
    real = {r[0].lower() for r in conn.execute("SELECT name FROM sqlite_master")}
    for fn in _TABLE_FUNCTIONS:
        # First use registers the eponymous table, which the authorizer would see as a schema update.
        conn.execute(f"SELECT 1 FROM {fn}('[]')").fetchall()
    guard = _Guard(real | set(_BUILTIN_TABLES), length_capped)
    started = time.monotonic()
    deadline = started + timeout_ms / 1000
    timed_out = False

    def progress() -> int:
        nonlocal timed_out
        timed_out = time.monotonic() > deadline
        return 1 if timed_out else 0  # non-zero interrupts the statement

    conn.set_authorizer(guard)
    conn.set_progress_handler(progress, 2000)
    try:
        cur = conn.execute(query)
        columns = [d[0] for d in cur.description or ()]
        rows: list[list[Any]] = []
        size, truncated = 0, False
        for row in iter(cur.fetchone, None):
            if len(rows) >= max_rows:
                truncated = True
                break
            cells = [_cell(v) for v in row]
            size += sum(_size(v) for v in cells) + 4
            if size > max_bytes:
                truncated = True
                break
            rows.append(cells)
        cur.close()
    except sqlite3.Warning as exc:  # "You can only execute one statement at a time."
        raise QueryRefused("only one statement is allowed") from exc
    except sqlite3.ProgrammingError as exc:
        raise QueryRefused("only one statement is allowed" if "one statement" in str(exc) else str(exc)) from exc
    except sqlite3.DatabaseError as exc:
        if timed_out:
            raise QueryRefused(f"the query was stopped after the {timeout_ms} ms time limit") from exc
        if guard.reason:
            raise QueryRefused(guard.reason) from exc
        if isinstance(exc, sqlite3.DataError) or "too big" in str(exc):
            raise QueryRefused(
                f"a value grew past the {_MAX_VALUE_BYTES:,}-byte size limit (string or blob too big)"
            ) from exc
        raise QueryRefused(f"SQL error: {exc}") from exc
    finally:
        conn.close()
    return Result(columns, rows, truncated, round((time.monotonic() - started) * 1000, 1))
