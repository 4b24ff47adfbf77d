"""The SQL console's guard on each engine: a real SQLite file made by the saver's migrations, and a PostgreSQL copy
of its rows read as the console's own role."""

import sqlite3
import time
from pathlib import Path

import psycopg
import pytest

import testbed.postgres as tbpg
from api import pgconsole, sqlconsole
from api.sqlconsole import ALLOWED, QueryRefused
from etl_common.db import parse_url
from saver.store import Store

RUN = {"run_id": "r1", "run_ts": "20260101_000000", "page": 0}


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, tmp_path):
    """The SQLite file, or the console role's URL of a PostgreSQL copy of it."""
    if request.param == "sqlite":
        return _loaded(tmp_path)
    return request.getfixturevalue("console_url")


@pytest.fixture(scope="module")
def console_url(tmp_path_factory, postgres_server):
    """The console role's URL of one PostgreSQL copy for the module: the tests only read."""
    url = postgres_server.create_database()
    tbpg.load_from_sqlite(_loaded(tmp_path_factory.mktemp("console")), url)
    return tbpg.make_roles(postgres_server, url)[1]


def _loaded(tmp_path: Path) -> Path:
    path = tmp_path / "data.db"
    store = Store(str(path))
    user = {
        "id": 1,
        "firstName": "Ada",
        "email": "ada@example.com",
        "age": 30,
        "ssn": "***-**-1234",
        "company": {"department": "Engineering"},
        "userAgent": "Mozilla/5.0 (Windows NT 10.0)",
    }
    store.load_pages(
        [
            {
                **RUN,
                "raw": [user, "{secret"],
                "valid": [{"pos": 0, "department_code": "ENG"}],
                "invalid": [{"pos": 1, "raw_line": "{secret", "error_reason": "not JSON"}],
            }
        ]
    )
    store.close()
    return path


def run(db, query, rows=100, timeout_ms=1000, size=1_000_000):
    if isinstance(db, str):
        return pgconsole.run_query(parse_url(db), query, rows, timeout_ms, size)
    return sqlconsole.run_query(db, query, rows, timeout_ms, size)


def on_sqlite(db) -> bool:
    return isinstance(db, Path)


def test_typed_columns_are_readable(db):
    result = run(db, "SELECT p.first_name, p.department_code, i.error_reason FROM processed_users p, invalid_users i")
    assert result.columns == ["first_name", "department_code", "error_reason"]
    assert result.rows == [["Ada", "ENG", "not JSON"]] and not result.truncated


def test_every_allowed_column_exists_in_the_schema(db):
    for table, columns in ALLOWED.items():
        result = run(db, f"SELECT {', '.join(sorted(columns))} FROM {table}")
        assert result.columns == sorted(columns)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM processed_users",
        "SELECT upper(record) FROM raw_users",
        "SELECT (SELECT raw_line FROM invalid_users)",
        "WITH x AS (SELECT record AS r FROM processed_users) SELECT length(r) FROM x",
        "SELECT record FROM processed_records",  # the view of migration 0008: its JSON is no way around the list
        "SELECT first_name FROM processed_records",
        "SELECT id FROM raw_users ORDER BY record",
        "SELECT id FROM raw_users GROUP BY record",
        "SELECT count(*) FROM loaded_pages",
        "SELECT sql FROM sqlite_master",
        "SELECT count(*) FROM main.uploaded_files",
        "INSERT INTO etl_runs (run_id, run_timestamp) VALUES ('a', 'b')",
        "REPLACE INTO etl_runs (run_id, run_timestamp) VALUES ('a', 'b')",
        "ATTACH ':memory:' AS m",
        "PRAGMA writable_schema = 1",
        "SELECT 1; SELECT 2",
        "SELECT load_extension('/tmp/x.so')",
        "SAVEPOINT s",
        "ANALYZE",
        "SELECT pg_read_file('/etc/passwd')",
        "SELECT pg_ls_dir('.')",
        "SELECT lo_import('/etc/passwd')",
        "SELECT set_config('statement_timeout', '0', false)",
        "SELECT query_to_xml('SELECT record FROM raw_users', true, false, '')",
        "SELECT 1) AS a; DELETE FROM etl_runs; SELECT (1",
        "COPY raw_users TO STDOUT",
        "SET ROLE postgres",
        "RESET ALL",
        "BEGIN",
        "COMMIT",
        "SELECT id FROM raw_users FOR UPDATE",
        "SELECT nextval('raw_users_id_seq')",
        "SELECT count(*) FROM pg_catalog.pg_authid",
    ],
)
def test_refused(db, query):
    with pytest.raises(QueryRefused):
        run(db, query)


def test_rows_and_size_are_capped(db):
    numbers = (
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 50)"
        if on_sqlite(db)
        else "WITH n(i) AS (SELECT generate_series(1, 50))"
    )
    r = run(db, f"{numbers} SELECT i FROM n", rows=10)
    assert len(r.rows) == 10 and r.truncated
    hundred = "substr(hex(zeroblob(50)), 1, 100)" if on_sqlite(db) else "repeat('0', 100)"
    r = run(db, f"{numbers} SELECT {hundred} FROM n", size=1000)
    assert len(r.rows) < 10 and r.truncated


def test_huge_values_are_refused(db):
    with pytest.raises(QueryRefused, match="too big"):
        run(db, "SELECT zeroblob(100000000)" if on_sqlite(db) else "SELECT repeat('x', 5000000)")


@pytest.mark.parametrize(
    "query",
    [
        "SELECT zeroblob(900000000)",
        "SELECT randomblob(900000000)",
        "SELECT replace(hex(zeroblob(400000)), '0', '0000000000')",
        "WITH RECURSIVE d(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM d WHERE n < 40) "
        "SELECT max(n) FROM d",
        "SELECT coalesce(printf('%.*c', 900000000, 'x'), printf('%.*c', 900000000, 'x'))",
        "SELECT format('%.*c', 2147483647, 'x')",
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 6) "
        "SELECT length(group_concat(hex(zeroblob(100000)))) FROM n",
    ],
)
@pytest.mark.parametrize("db", ["sqlite"], indirect=True)  # SQLite's functions; PostgreSQL's are below
def test_values_cannot_grow_past_the_size_limit(db, query):
    """Every way of growing one value in one step is refused with the reason, not run past the time limit."""
    with pytest.raises(QueryRefused, match=r"size limit|too big|not allowed in the console") as refused:
        run(db, query, timeout_ms=60_000)  # a time limit the query must not need
    assert "SQL error" not in str(refused.value)


@pytest.mark.parametrize(
    "query",
    [
        "SELECT repeat('x', 900000000)",
        "SELECT lpad('', 400000000, 'xy')",
        "SELECT string_agg(repeat('x', 100000), '') FROM generate_series(1, 20)",
        "SELECT array_agg(g) FROM generate_series(1, 300000) AS g",
        "SELECT repeat('x', 600000) AS a, repeat('y', 600000) AS b",
        "WITH RECURSIVE d(s, n) AS (SELECT 'x', 0 UNION ALL SELECT s || s, n + 1 FROM d WHERE n < 24) "
        "SELECT s FROM d WHERE n = 24",
    ],
)
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgresql_values_cannot_grow_past_the_size_limit(db, query):
    """A row past the limit stops the query in the database with the reason; nothing that big reaches the API.

    Building a value of hundreds of megabytes may take the database longer than the time limit: then that
    limit stops it first, as it would any slow query.
    """
    started = time.monotonic()
    with pytest.raises(QueryRefused, match=r"size limit|2000 ms time limit"):
        run(db, query, timeout_ms=2000)
    assert time.monotonic() - started < 10


def test_select_star_works_on_every_table_without_secret_columns(db):
    """Every column the migrations add is in the allow-list unless it holds the record JSON or unparsed text."""
    for table, allowed in ALLOWED.items():
        columns = _columns(db, table)
        assert columns - allowed <= {"record", "raw_line"}, table
        if not columns & {"record", "raw_line"}:
            result = run(db, f"SELECT * FROM {table}")
            assert set(result.columns) == columns
    assert run(db, "SELECT * FROM etl_runs").columns[-2:] == ["warnings", "rows_removed_at"]


def test_runaway_query_is_interrupted_near_the_limit(db):
    started = time.monotonic()
    with pytest.raises(QueryRefused, match="200 ms time limit"):
        run(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n", timeout_ms=200)
    assert time.monotonic() - started < 3


def test_blobs_come_back_as_hex(db):
    assert run(db, "SELECT x'00ff'" if on_sqlite(db) else "SELECT '\\x00ff'::bytea").rows == [["00ff"]]


def _columns(db, table: str) -> set[str]:
    if on_sqlite(db):
        with sqlite3.connect(db) as conn:
            return {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    with psycopg.connect(db) as conn:  # the console's role sees the names of every column
        rows = conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = %s UNION "
            "SELECT attname FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped",
            (table, table),
        ).fetchall()
        return {r[0] for r in rows}


@pytest.mark.parametrize(
    "query",
    [
        # A WAL record written at once, outside the transaction (non-transactional): the rollback does not undo it,
        # and every logical decoding consumer of the database receives it.
        "SELECT pg_logical_emit_message(false, 'console', 'injected')",
        # Large objects are created and written in a READ ONLY transaction (pg_largeobject is exempt).
        "SELECT lo_from_bytea(0, 'x')",
        "SELECT lo_create(0)",
        "SELECT count(lo_from_bytea(0, '\\x00'::bytea)) FROM generate_series(1, 1000)",
    ],
)
@pytest.mark.parametrize("db", ["postgresql"], indirect=True)
def test_postgresql_functions_that_write_are_refused(db, query):
    """The console is read-only by the database's own means: a function that writes (WAL, large objects) despite
    the READ ONLY transaction is refused, as set_config() is (revoked from PUBLIC by the console grant)."""
    with pytest.raises(QueryRefused):
        run(db, query)


def test_the_console_grant_revokes_every_writer_the_api_checks():
    """One list, two places: each function the API refuses the console for is one the console grant revokes."""
    from saver import migrate

    grant = (migrate.MIGRATIONS / "postgresql" / "grants" / "console.sql").read_text(encoding="utf-8")
    assert all(f"'{name}'" in grant for name in pgconsole.WRITERS)
