"""The SQL console's guard on a real SQLite file made by the saver's migrations."""

import sqlite3
import time

import pytest

from api.sqlconsole import ALLOWED, QueryRefused, run_query
from saver.store import Store

RUN = {"run_id": "r1", "run_ts": "20260101_000000", "page": 0}


@pytest.fixture
def db(tmp_path):
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
    return run_query(db, query, rows, timeout_ms, size)


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
    ],
)
def test_refused(db, query):
    with pytest.raises(QueryRefused):
        run(db, query)


def test_rows_and_size_are_capped(db):
    r = run(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 50) SELECT i FROM n", rows=10)
    assert len(r.rows) == 10 and r.truncated
    r = run(
        db,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 50) "
        "SELECT substr(hex(zeroblob(50)), 1, 100) FROM n",
        size=1000,
    )
    assert len(r.rows) < 10 and r.truncated


def test_huge_values_are_refused(db):
    with pytest.raises(QueryRefused, match="too big"):
        run(db, "SELECT zeroblob(100000000)")


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
def test_values_cannot_grow_past_the_size_limit(db, query):
    """Every way of growing one value in one step is refused with the reason, not run past the time limit."""
    with pytest.raises(QueryRefused, match=r"size limit|too big|not allowed in the console") as refused:
        run(db, query, timeout_ms=60_000)  # a time limit the query must not need
    assert "SQL error" not in str(refused.value)


def test_select_star_works_on_every_table_without_secret_columns(db):
    """Every column the migrations add is in the allow-list unless it holds the record JSON or unparsed text."""
    conn = sqlite3.connect(db)
    for table, allowed in ALLOWED.items():
        columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
        assert columns - allowed <= {"record", "raw_line"}, table
        if not columns & {"record", "raw_line"}:
            result = run(db, f"SELECT * FROM {table}")
            assert set(result.columns) == columns
    conn.close()
    assert run(db, "SELECT * FROM etl_runs").columns[-2:] == ["warnings", "rows_removed_at"]


def test_runaway_query_is_interrupted_near_the_limit(db):
    started = time.monotonic()
    with pytest.raises(QueryRefused, match="200 ms time limit"):
        run(db, "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT max(i) FROM n", timeout_ms=200)
    assert time.monotonic() - started < 3


def test_blobs_come_back_as_hex(db):
    assert run(db, "SELECT x'00ff'").rows == [["00ff"]]
