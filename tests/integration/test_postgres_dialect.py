"""Each engine's dialect (etl_common.db) on real databases: the same SQL text but for the dialect's parts gives the
same answers on SQLite and PostgreSQL."""

import re

import psycopg
import pytest

from etl_common.db import POSTGRESQL, SQLITE, connect_writer, parse_url
from saver import migrate

RUNS = [
    ("r1", "2026-01-01T00:00:00.000Z", "2026-01-01T00:01:02.345Z", None),
    ("r2", "2026-01-01T23:59:59.999Z", "2026-01-02T00:00:00.001Z", "Engineering"),
    ("r3", "2026-01-03T00:00:00.000Z", None, "engineering"),
    ("r4", "2026-01-04T00:00:00.000Z", "2026-01-04T00:00:00.000Z", "Ingeniería"),
]


@pytest.fixture
def engines(tmp_path, postgres_server):
    """A migrated SQLite file and PostgreSQL database with the same runs, and each one's dialect."""
    lite = connect_writer(tmp_path / "data.db")
    pg = connect_writer(parse_url(postgres_server.create_database()))
    for conn, dialect in ((lite, SQLITE), (pg, POSTGRESQL)):
        migrate.migrate(conn)
        insert = dialect.insert("etl_runs", ("run_id", "run_timestamp", "started_at", "finished_at", "error"))
        for run_id, started, finished, error in RUNS:
            conn.execute(insert, (run_id, run_id, started, finished, error))
    yield (lite, SQLITE), (pg, POSTGRESQL)
    lite.close()
    pg.close()


def _all(conn, sql, args=()):
    return [tuple(r) for r in conn.execute(sql, args).fetchall()]


def test_seconds_between_timestamps_match(engines):
    answers = []
    for conn, dialect in engines:
        duration = dialect.seconds_between.format(start="started_at", end="finished_at")
        answers.append(_all(conn, f"SELECT run_id, {duration} FROM etl_runs ORDER BY id"))
    assert answers[0] == answers[1] == [("r1", 62.345), ("r2", 0.002), ("r3", None), ("r4", 0.0)]


def test_nocase_equality_like_and_null_order_match(engines):
    answers = []
    for conn, dialect in engines:
        equal = dialect.sql(dialect.nocase_equal.format(column="error"))
        like = f"error {dialect.like} {dialect.placeholder}"
        answers.append(
            (
                _all(conn, f"SELECT run_id FROM etl_runs WHERE {equal} ORDER BY id", ("ENGINEERING",)),
                _all(conn, f"SELECT run_id FROM etl_runs WHERE {like} ORDER BY id", ("%IN%",)),
                _all(conn, f"SELECT run_id FROM etl_runs ORDER BY error ASC{dialect.nulls_ascending}, id"),
                _all(conn, f"SELECT run_id FROM etl_runs ORDER BY error DESC{dialect.nulls_descending}, id"),
            )
        )
    assert answers[0] == answers[1]
    # ASCII letters only fold, as SQLite's NOCASE and LIKE do; byte order puts "I" before "e".
    assert answers[0][0] == [("r2",), ("r3",)] and answers[0][1] == [("r2",), ("r3",), ("r4",)]
    assert answers[0][2] == [("r1",), ("r2",), ("r4",), ("r3",)]


def test_upsert_and_insert_or_nothing_match(engines):
    for conn, dialect in engines:
        columns = ("run_id", "run_timestamp", "error")
        conn.execute(dialect.insert("etl_runs", columns), ("r1", "x", "ignored"))  # a conflict: nothing
        conn.execute(dialect.insert("etl_runs", columns, ("run_id",), ("error",)), ("r2", "x", "updated"))
        assert _all(
            conn, "SELECT run_id, run_timestamp, error FROM etl_runs WHERE run_id IN ('r1', 'r2') ORDER BY id"
        ) == [
            ("r1", "r1", None),
            ("r2", "r2", "updated"),
        ]


def test_now_is_the_project_timestamp_format(engines):
    for conn, dialect in engines:
        (now,) = conn.execute(f"SELECT {dialect.now}").fetchone()
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", now), (dialect.name, now)


def test_the_writer_on_postgresql_is_in_autocommit(engines):
    (_, _), (pg, _) = engines
    assert isinstance(pg, psycopg.Connection) and pg.autocommit
