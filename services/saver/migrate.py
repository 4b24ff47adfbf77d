"""Explicit, versioned schema migrations recorded in ``schema_migrations``: one numbering, each engine's SQL.

SQLite's scripts are ``migrations/NNNN_*.sql``, PostgreSQL's ``migrations/postgresql/NNNN_*.sql``, the same
versions making the same tables. On PostgreSQL the roles of the API's reader and of the SQL console get
their grants after the migrations (``migrations/postgresql/grants``) when their names are given.
"""

import re
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from etl_common.clock import utc_iso

if TYPE_CHECKING:
    import psycopg  # imported by the connection itself when the engine is PostgreSQL

MIGRATIONS = Path(__file__).with_name("migrations")
# Any number works; this one is "etl-migr" in ASCII. Savers starting together apply each migration once.
_LOCK_KEY = 0x65746C2D6D696772
_ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TRACKING = (
    "CREATE TABLE IF NOT EXISTS schema_migrations "
    "(version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)"
)


def scripts(engine: str) -> list[Path]:
    """The migration scripts of ``engine`` ("sqlite" or "postgresql"), in version order."""
    folder = MIGRATIONS if engine == "sqlite" else MIGRATIONS / "postgresql"
    return sorted(folder.glob("*.sql"))


def migrate(
    conn: "sqlite3.Connection | psycopg.Connection[Any]", reader_role: str = "", console_role: str = ""
) -> list[str]:
    """Apply the migrations not yet recorded, each in its own transaction; return their names.

    On PostgreSQL, grant ``reader_role`` and ``console_role`` (existing roles) what they may read afterwards.
    """
    if isinstance(conn, sqlite3.Connection):
        return _migrate_sqlite(conn)
    return _migrate_postgresql(conn, reader_role, console_role)


def _migrate_sqlite(conn: sqlite3.Connection) -> list[str]:
    # A new database returns the space retention frees in small steps (saver/retention.py). The mode takes a
    # VACUUM, instant while there is no table; an existing database needs `python -m saver vacuum` once.
    if conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0:
        conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
        conn.execute("VACUUM")
    conn.execute(_TRACKING)
    done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
    applied = []
    for path in scripts("sqlite"):
        version = _version(path)
        if version in done:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript would commit on its own; run the statements inside our transaction.
            for statement in _statements(path.read_text(encoding="utf-8")):
                conn.execute(statement)
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                (version, path.name, utc_iso()),
            )
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        applied.append(path.name)
    return applied


def _migrate_postgresql(conn: "psycopg.Connection[Any]", reader_role: str, console_role: str) -> list[str]:
    for role in (reader_role, console_role):
        if role and not _ROLE_NAME.match(role):
            raise ValueError(
                f"role name {role!r}: lower-case letters, digits and _ only, at most 63, not a digit first"
            )
    applied = []
    with conn.transaction():
        # Held to the end of this transaction: a second saver waits, then finds the migrations recorded.
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_LOCK_KEY,))
        conn.execute(_TRACKING)
        done = {row[0] for row in conn.execute("SELECT version FROM schema_migrations")}
        for path in scripts("postgresql"):
            version = _version(path)
            if version in done:
                continue
            # A savepoint per script: it applies whole or not at all, and is recorded with its statements.
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8").encode())  # no parameters: the whole script at once
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (%s, %s, %s)",
                    (version, path.name, utc_iso()),
                )
            applied.append(path.name)
        for role, script in ((reader_role, "reader.sql"), (console_role, "console.sql")):
            if role:
                _grant(conn, role, MIGRATIONS / "postgresql" / "grants" / script)
    return applied


def _grant(conn: "psycopg.Connection[Any]", role: str, script: Path) -> None:
    """Run a grant script with ``{role}`` and ``{schema}`` filled in as quoted identifiers."""
    from psycopg import sql

    if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is None:
        raise ValueError(
            f"role {role!r} does not exist; create it first (CREATE ROLE {role} LOGIN PASSWORD '...'), "
            "then migrate again"
        )
    row = conn.execute("SELECT current_schema()").fetchone()
    schema = row[0] if row else "public"
    # The text is a file of ours; only the names are filled in, as identifiers.
    text = sql.SQL(script.read_text(encoding="utf-8"))
    conn.execute(text.format(role=sql.Identifier(role), schema=sql.Identifier(schema)))


def _version(path: Path) -> int:
    return int(path.name.split("_", 1)[0])


def _statements(script: str) -> list[str]:
    statements, buf = [], ""
    for line in script.splitlines(keepends=True):
        if line.strip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            statements.append(buf.strip())
            buf = ""
    return [s for s in statements if s]
