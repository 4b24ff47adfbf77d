"""The SQL console on PostgreSQL: one SELECT in a read-only transaction, as a role that reads the typed columns only.

Safety rests on the database, as on SQLite it rests on SQLite's authorizer: the console logs in as its
own role (ETL_API_SQL_DATABASE_URL; granted by migrations/postgresql/grants/console.sql), checked before
every query to read nothing but the allow-list and to hold no power over files or settings; the
transaction is READ ONLY with a ``statement_timeout``; the text is sent as one prepared statement
(PostgreSQL refuses several) wrapped as a subquery, so only a query can run, at most ``max_rows + 1``
rows of at most ``MAX_ROW_BYTES`` each come back, streamed row by row.
"""

import re
import time
from typing import Any

import psycopg

from api.sqlconsole import ALLOWED, QueryRefused, Result
from etl_common.db import DatabaseUrl, connection_problem

MAX_ROW_BYTES = 1_000_000  # as SQLite's value length limit of the console
_TOO_BIG = "bytes: past the console row size limit"
# A row past the limit stops the query with an error naming it; computed from the row so the planner cannot
# fold it into a constant (which would fail every query).
_WRAPPED = (
    "SELECT * FROM (\n{query}\n) AS console WHERE CASE WHEN pg_column_size(console.*) > {cap} "
    "THEN (pg_column_size(console.*)::text || ' {too_big}')::int ELSE 1 END = 1 LIMIT {limit}"
)
# What the console's role can do beyond the allow-list: each a reason to refuse the console until the grants
# are fixed. The columns it can read in this schema are compared with ALLOWED in Python.
_POWERS = """
SELECT r.rolsuper, r.rolbypassrls,
       has_function_privilege('pg_catalog.set_config(text, text, boolean)', 'EXECUTE'),
       pg_has_role('pg_read_server_files', 'MEMBER') OR pg_has_role('pg_execute_server_program', 'MEMBER')
           OR pg_has_role('pg_write_server_files', 'MEMBER') OR pg_has_role('pg_read_all_data', 'MEMBER'),
       EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = 'pg_catalog'::regnamespace
               AND p.proname IN ({writers}) AND has_function_privilege(p.oid, 'EXECUTE'))
FROM pg_roles r WHERE r.rolname = current_user
"""
# The functions that write despite a READ ONLY transaction (WAL messages, large objects): revoked from PUBLIC by
# migrations/postgresql/grants/console.sql, which lists the same names.
WRITERS = (
    "pg_logical_emit_message",
    "lo_create",
    "lo_creat",
    "lo_from_bytea",
    "lo_import",
    "lo_export",
    "lo_open",
    "lowrite",
    "lo_put",
    "lo_truncate",
    "lo_truncate64",
    "lo_unlink",
)
_POWERS = _POWERS.format(writers=", ".join(f"'{name}'" for name in WRITERS))
_READABLE = """
SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'f')
  AND a.attnum > 0 AND NOT a.attisdropped AND has_column_privilege(c.oid, a.attnum, 'SELECT')
"""
_POWER_NAMES = (
    "is a superuser",
    "bypasses row security",
    "may call set_config()",
    "is a member of a file-reading or all-data role",
    "may call a function that writes despite READ ONLY (pg_logical_emit_message, lo_create, ...)",
)


class ConsoleUnsafe(Exception):
    """The console's role can read or do more than the console allows (answered 503 with the grant to fix)."""


def run_query(target: DatabaseUrl, query: str, max_rows: int, timeout_ms: int, max_bytes: int) -> Result:
    """Run ``query`` as the console's role in a fresh read-only transaction; at most ``max_rows`` rows."""
    started = time.monotonic()
    try:
        conn = psycopg.connect(target.url, connect_timeout=5, application_name="etl-console")
    except psycopg.OperationalError as exc:
        # The cause (a refused login is a setting to fix, a closed port a server to start), never the password.
        raise ConsoleUnsafe(
            f"the SQL console cannot connect: {connection_problem(exc, target)} (ETL_API_SQL_DATABASE_URL)"
        ) from exc
    try:
        conn.read_only = True
        conn.execute(f"SET LOCAL statement_timeout = {int(timeout_ms)}")
        _check_role(conn)
        text = query.strip().rstrip(";").rstrip()
        wrapped = _WRAPPED.format(query=text, cap=MAX_ROW_BYTES, too_big=_TOO_BIG, limit=int(max_rows) + 1)
        cur = conn.cursor()
        rows: list[list[Any]] = []
        size, truncated = 0, False
        for row in cur.stream(wrapped):  # one prepared statement, row by row
            if len(rows) >= max_rows:
                truncated = True
                break
            cells = [_cell(v) for v in row]
            size += sum(len(v) if isinstance(v, str) else 8 for v in cells) + 4
            if size > max_bytes:
                truncated = True
                break
            rows.append(cells)
        columns = [d.name for d in cur.description or ()]
    except psycopg.errors.QueryCanceled as exc:
        raise QueryRefused(f"the query was stopped after the {timeout_ms} ms time limit") from exc
    except psycopg.errors.InsufficientPrivilege as exc:
        raise QueryRefused(
            f"{_first_line(exc)} (only typed, unmasked columns of {', '.join(sorted(ALLOWED))} are available; "
            "name them instead of *)"
        ) from exc
    except psycopg.errors.SyntaxError as exc:
        # The text runs as a subquery: any other statement, or several, is a syntax error there.
        raise QueryRefused(f"SQL error: {_first_line(exc)} ({_one_select(query)})") from exc
    except psycopg.errors.ReadOnlySqlTransaction as exc:
        raise QueryRefused(f"only read-only SELECT statements are allowed ({_first_line(exc)})") from exc
    except psycopg.errors.ProgramLimitExceeded as exc:
        raise QueryRefused(f"a value grew past the database's size limit ({_first_line(exc)})") from exc
    except psycopg.Error as exc:
        if _TOO_BIG in str(exc):
            raise QueryRefused(f"a row grew past the {MAX_ROW_BYTES:,}-byte size limit (string too big)") from exc
        if isinstance(exc, psycopg.OperationalError) and conn.broken:
            raise ConsoleUnsafe("the SQL console's database connection was lost; try again") from exc
        raise QueryRefused(f"SQL error: {_first_line(exc)}") from exc
    finally:
        conn.close()  # the transaction is rolled back; nothing the query did outlives it
    return Result(columns, rows, truncated, round((time.monotonic() - started) * 1000, 1))


def _check_role(conn: psycopg.Connection[Any]) -> None:
    """ConsoleUnsafe unless the connected role reads the allow-list's columns at most and has none of the powers."""
    powers = conn.execute(_POWERS).fetchone() or (True,) * len(_POWER_NAMES)
    held = [name for name, has in zip(_POWER_NAMES, powers, strict=True) if has]
    extra = sorted(
        f"{table}.{column}"
        for table, column in conn.execute(_READABLE).fetchall()
        if column not in ALLOWED.get(table, frozenset())
    )
    if held or extra:
        what = "; ".join(
            [*held, *([f"reads {', '.join(extra[:5])}{' ...' if len(extra) > 5 else ''}"] if extra else [])]
        )
        raise ConsoleUnsafe(
            f"the SQL console is off: its PostgreSQL role {what}. Give ETL_API_SQL_DATABASE_URL a role of its own "
            "and grant it with `python -m saver migrate` (ETL_DATABASE_CONSOLE_ROLE; docs/scaling.md)"
        )


def _cell(value: Any) -> Any:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()  # as on SQLite: JSON has no bytes
    if value is None or isinstance(value, bool | int | float | str):
        return value
    return str(value)  # dates, decimals, arrays, JSON...: their text


def _one_select(query: str) -> str:
    """What the console takes, and what the query's first keyword is when it is not SELECT or WITH."""
    word = re.match(r"\s*([A-Za-z]{1,20})\b", query)
    first = word.group(1).upper() if word else ""
    also = f"; this one is {first}" if first and first not in ("SELECT", "WITH", "VALUES", "TABLE") else ""
    return f"the console takes one statement, a SELECT{also}"


def _first_line(exc: BaseException) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
