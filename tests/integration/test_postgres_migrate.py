"""The migrations of both engines on real databases (a SQLite file, a private PostgreSQL): one numbering, the same
tables, columns, keys and CHECKs; the roles' grants of the API's reader and of the SQL console."""

import os
import sqlite3
import subprocess
from contextlib import closing

import psycopg
import pytest

import testbed as tb
import testbed.postgres as tbpg
from api.sqlconsole import ALLOWED
from etl_common.db import connect_writer, parse_url
from saver import migrate


def _sqlite_columns(conn: sqlite3.Connection) -> dict[str, dict[str, bool]]:
    tables = [
        r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
    ]
    # pk > 0 or notnull: SQLite's INTEGER PRIMARY KEY is NOT NULL without saying so.
    return {t: {r[1]: bool(r[3] or r[5]) for r in conn.execute(f"PRAGMA table_info({t})")} for t in tables}


def _postgresql_columns(conn: psycopg.Connection) -> dict[str, dict[str, bool]]:
    rows = conn.execute(
        "SELECT c.table_name, c.column_name, c.is_nullable = 'NO' FROM information_schema.columns c "
        "JOIN information_schema.tables t ON t.table_schema = c.table_schema AND t.table_name = c.table_name "
        "WHERE c.table_schema = current_schema() AND t.table_type = 'BASE TABLE'"  # views are compared apart
    ).fetchall()
    found: dict[str, dict[str, bool]] = {}
    for table, column, not_null in rows:
        found.setdefault(table, {})[column] = not_null
    return found


def _indexes_sqlite(conn: sqlite3.Connection) -> set[str]:
    return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")}


def _indexes_postgresql(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute(
        "SELECT i.indexname FROM pg_indexes i WHERE i.schemaname = current_schema() AND NOT EXISTS "
        "(SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)"  # keys' own indexes are named differently
    ).fetchall()
    return {r[0] for r in rows}


def test_both_engines_number_their_migrations_alike():
    sqlite_set = [p.name.split("_", 1)[0] for p in migrate.scripts("sqlite")]
    postgresql_set = [p.name.split("_", 1)[0] for p in migrate.scripts("postgresql")]
    assert sqlite_set == postgresql_set, "every migration needs its PostgreSQL twin under migrations/postgresql/"
    assert [p.name for p in migrate.scripts("sqlite")] == [p.name for p in migrate.scripts("postgresql")]


def test_both_engines_make_the_same_tables_columns_and_indexes(tmp_path, postgres_server):
    lite = connect_writer(tmp_path / "data.db")
    applied = migrate.migrate(lite)
    with connect_writer(parse_url(postgres_server.create_database())) as pg:
        assert migrate.migrate(pg) == applied  # type: ignore[arg-type]
        assert migrate.migrate(pg) == []  # type: ignore[arg-type]  # a restart applies nothing
        assert _postgresql_columns(pg) == _sqlite_columns(lite)  # type: ignore[arg-type]
        assert _indexes_postgresql(pg) == _indexes_sqlite(lite)  # type: ignore[arg-type]
        views = [r[0] for r in lite.execute("SELECT name FROM sqlite_master WHERE type = 'view' ORDER BY name")]
        pg_views = [
            r[0] for r in pg.execute("SELECT viewname FROM pg_views WHERE schemaname = current_schema() ORDER BY 1")
        ]
        assert pg_views == views
        for view in views:
            assert [d.name for d in pg.execute(f"SELECT * FROM {view} LIMIT 0").description] == [
                d[0] for d in lite.execute(f"SELECT * FROM {view} LIMIT 0").description
            ]
        versions = [r[0] for r in pg.execute("SELECT version FROM schema_migrations ORDER BY version")]
        assert versions == [r[0] for r in lite.execute("SELECT version FROM schema_migrations ORDER BY version")]
    lite.close()


@pytest.mark.parametrize(
    ("statement", "why"),
    [
        ("INSERT INTO etl_runs (run_id, run_timestamp, status) VALUES ('r2', 't', 'done')", "check"),
        ("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')", "unique"),
        ("INSERT INTO loaded_pages VALUES ('nope', 0, 1, 1, 0, 't')", "foreign key"),
        (
            "INSERT INTO uploaded_files (run_id, kind, name, bytes, sha256, records, written_at) "
            "VALUES ('r1', 'zip', 'n', 1, 's', 1, 't')",
            "check",
        ),
        ("INSERT INTO raw_users (run_id, page, position, inserted_at) VALUES ('r1', 0, 0, 't')", "not null"),
    ],
)
def test_both_engines_refuse_the_same_bad_rows(tmp_path, postgres_url, statement, why):
    lite = connect_writer(tmp_path / "data.db")
    migrate.migrate(lite)
    lite.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')")
    with pytest.raises(sqlite3.IntegrityError):
        lite.execute(statement)
    lite.close()
    with connect_writer(parse_url(postgres_url)) as pg:
        migrate.migrate(pg)  # type: ignore[arg-type]
        pg.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't') ON CONFLICT DO NOTHING")
        with pytest.raises(psycopg.errors.IntegrityError):
            pg.execute(statement)


def test_the_console_grant_is_the_console_allow_list():
    """The grant script and the SQLite guard's allow-list name the same columns of the same tables."""
    text = (migrate.MIGRATIONS / "postgresql" / "grants" / "console.sql").read_text()
    granted: dict[str, frozenset[str]] = {}
    for part in text.split("GRANT SELECT (")[1:]:
        columns, rest = part.split(")", 1)
        table = rest.split("ON", 1)[1].split()[0]
        granted[table] = frozenset(c.strip() for c in columns.split(","))
    assert granted == ALLOWED


def test_roles_get_their_grants_and_nothing_more(postgres_server):
    admin_url = postgres_server.create_database()
    with psycopg.connect(postgres_server.url(), autocommit=True) as su:
        for role in ("etl_reader", "etl_console"):
            su.execute(f"DROP ROLE IF EXISTS {role}")  # another test of the session may have made it elsewhere
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute("CREATE ROLE etl_reader LOGIN PASSWORD 'r'")
        admin.execute("CREATE ROLE etl_console LOGIN PASSWORD 'c'")
        with pytest.raises(ValueError, match="does not exist; create it first"):
            migrate.migrate(admin, console_role="etl_nobody")
        migrate.migrate(admin, reader_role="etl_reader", console_role="etl_console")
        admin.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r1', 't')")
    database = admin_url.rsplit("/", 1)[1]
    with closing(psycopg.connect(postgres_server.url(database, "etl_reader", "r"), autocommit=True)) as reader:
        assert reader.execute("SELECT run_id FROM etl_runs").fetchall() == [("r1",)]
        assert reader.execute("SELECT count(record) FROM raw_users").fetchone() == (0,)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            reader.execute("INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('r2', 't')")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            reader.execute("BEGIN READ WRITE; DELETE FROM etl_runs")
    with closing(psycopg.connect(postgres_server.url(database, "etl_console", "c"), autocommit=True)) as console:
        assert console.execute("SELECT run_id, status FROM etl_runs").fetchall() == [("r1", "running")]
        for query in (
            "SELECT record FROM raw_users",
            "SELECT raw_line FROM invalid_users",
            "SELECT * FROM processed_users",
            "SELECT count(*) FROM loaded_pages",
            "SELECT report FROM run_quality",
            "SELECT set_config('statement_timeout', '0', false)",
            "SELECT pg_read_file('/etc/passwd')",
            "SELECT pg_ls_dir('.')",
            "SELECT lo_import('/etc/passwd')",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                console.execute(query)
        assert console.execute("SHOW statement_timeout").fetchone() == ("1min",)
        assert console.execute("SHOW default_transaction_read_only").fetchone() == ("on",)


def test_the_saver_command_migrates_postgresql_and_grants_the_roles(tmp_path, postgres_server):
    """``python -m saver migrate`` with ETL_DATABASE_URL on PostgreSQL (a real process); serving says it cannot yet."""
    url = postgres_server.create_database()
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("DROP ROLE IF EXISTS etl_cli_console")
        admin.execute("CREATE ROLE etl_cli_console LOGIN PASSWORD 'c'")
    env = {
        "PATH": os.environ["PATH"],
        "ETL_DATABASE_URL": url,
        "ETL_DATABASE_CONSOLE_ROLE": "etl_cli_console",
        "ETL_DB_PATH": str(tmp_path / "unused.db"),
    }
    done = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "applied 0001_init.sql" in done.stderr and postgres_server.password not in done.stderr
    again = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "nothing (up to date)" in again.stderr
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM schema_migrations").fetchone() == (
            len(migrate.scripts("postgresql")),
        )
        assert conn.execute(
            "SELECT has_column_privilege('etl_cli_console', 'raw_users', 'record', 'SELECT')"
        ).fetchone() == (False,)
    # SQLite's vacuum has no meaning on PostgreSQL (autovacuum): refused with the reason, no SQLite file made.
    vacuum = subprocess.run([tb.PYTHON, "-m", "saver", "vacuum"], env=env, capture_output=True, text=True, timeout=60)
    assert vacuum.returncode == 2 and "autovacuum" in vacuum.stderr and postgres_server.password not in vacuum.stderr
    assert not (tmp_path / "unused.db").exists()


def test_a_bad_database_url_stops_the_saver_with_one_clear_line(tmp_path):
    env = {"PATH": os.environ["PATH"], "ETL_DATABASE_URL": "mysql://u:secret@h/db"}
    done = subprocess.run([tb.PYTHON, "-m", "saver", "migrate"], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "names no engine" in done.stderr and "secret" not in done.stderr


def test_the_console_refuses_a_role_that_reads_or_can_do_more(postgres_server):
    """The API's check before each console query: the reader's role, a superuser, or a role that may still call
    set_config() (no console grant applied in that database) turn the console off, saying what to fix."""
    from api.pgconsole import ConsoleUnsafe, run_query
    from api.sqlconsole import QueryRefused

    url = postgres_server.create_database()
    reader, console = tbpg.make_roles(postgres_server, url)
    assert run_query(parse_url(console), "SELECT count(*) FROM etl_runs", 10, 1000, 10_000).rows == [[0]]
    for login, says in ((reader, "reads invalid_users.raw_line, invalid_users.record"), (url, "is a superuser")):
        with pytest.raises(ConsoleUnsafe, match=says):
            run_query(parse_url(login), "SELECT 1", 10, 1000, 10_000)
    # A database where only the columns were granted, by hand: set_config() is still everyone's.
    other = postgres_server.create_database()
    database = other.rsplit("/", 1)[1]
    with connect_writer(parse_url(other)) as conn:
        migrate.migrate(conn)  # type: ignore[arg-type]
        conn.execute("DROP ROLE IF EXISTS etl_by_hand")
        conn.execute("CREATE ROLE etl_by_hand LOGIN PASSWORD 'h'")
        conn.execute("GRANT SELECT (run_id) ON etl_runs TO etl_by_hand")
    by_hand = parse_url(postgres_server.url(database, "etl_by_hand", "h"))
    with pytest.raises(ConsoleUnsafe, match=r"may call set_config\(\)"):
        run_query(by_hand, "SELECT run_id FROM etl_runs", 10, 1000, 10_000)
    with pytest.raises(QueryRefused, match="time limit"):  # the check itself runs under the time limit
        run_query(parse_url(console), "SELECT pg_sleep(5)", 10, 200, 10_000)
