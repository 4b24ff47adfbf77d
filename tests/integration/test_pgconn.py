"""The saver's psycopg adapter (saver.pgconn) on a real PostgreSQL, beside sqlite3 doing the same."""

import sqlite3

import pytest

from saver.runevents import add_warning
from saver.store import Store


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def _run(store: Store, run_id: str = "20261204_010203_abcdef") -> str:
    with store.transaction():
        store._ensure_run(run_id, "20261204_010203")
    return run_id


def test_rows_by_index_and_name_and_placeholders_outside_quotes(store):
    run_id = _run(store)
    row = store.conn.execute(
        "SELECT run_id, 'a?b%c' AS text, ? AS n FROM etl_runs WHERE run_id=?", (7, run_id)
    ).fetchone()
    assert (row[0], row["run_id"], row["text"], row[2], row["n"]) == (run_id, run_id, "a?b%c", 7, 7)
    assert dict(zip(row.keys(), row, strict=True)) == {"run_id": run_id, "text": "a?b%c", "n": 7}
    assert store.conn.execute("SELECT run_id FROM etl_runs WHERE run_id='none'").fetchone() is None


def test_on_conflict_counts_and_a_second_insert_adds_nothing(store):
    run_id = _run(store)
    _run(store, run_id)
    assert store.conn.execute("SELECT count(*) FROM etl_runs").fetchone()[0] == 1
    sql = (
        "INSERT INTO loaded_pages (run_id, page, raw_count, valid_count, invalid_count, loaded_at) "
        "VALUES (?,?,0,0,0,'x') ON CONFLICT DO NOTHING"
    )
    with store.transaction():
        assert store.conn.execute(sql, (run_id, 0)).rowcount == 1
        assert store.conn.execute(sql, (run_id, 0)).rowcount == 0


def test_errors_are_sqlite3_classes_and_a_failed_transaction_rolls_back(store):
    run_id = _run(store)
    with pytest.raises(sqlite3.IntegrityError):
        with store.transaction():
            store.conn.execute("UPDATE etl_runs SET error='kept?' WHERE run_id=?", (run_id,))
            store.conn.execute("INSERT INTO etl_runs (run_id) VALUES (?)", (run_id,))
    assert not store.conn.in_transaction
    assert store.run(run_id)["error"] is None
    with pytest.raises(sqlite3.OperationalError):
        store.conn.execute("SELECT * FROM no_such_table")


def test_warnings_are_appended_once_as_the_same_json(store):
    run_id = _run(store)
    at = "2026-12-04T01:02:03.000Z"
    assert add_warning(store.conn, run_id, 'first "one" é', at)
    assert add_warning(store.conn, run_id, "second", at)
    assert not add_warning(store.conn, run_id, "second", at)
    assert store.run(run_id)["warnings"] == '["first \\"one\\" é","second"]'


def test_one_finisher_per_run(store, request):
    run_id = _run(store)
    store.conn.execute("UPDATE etl_runs SET status='loaded' WHERE run_id=?", (run_id,))
    assert store.claim(run_id)
    if store.engine == "sqlite":
        return  # one saver on SQLite: nothing to exclude
    other = Store(store.database)
    try:
        assert not other.claim(run_id)  # held by the first saver's session
        store.mark(run_id, "succeeded")
        store.unclaim(run_id)
        assert not other.claim(run_id)  # free, but the run owes nothing any more
        store.mark(run_id, "loaded")
        assert other.claim(run_id)
        other.unclaim(run_id)
    finally:
        other.close()
