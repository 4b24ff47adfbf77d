"""Run ids count 1, 2, 3 on both engines, however many pages and events each run brings."""

import pytest

from saver.store import Store
from transformer.transform import transform_page


@pytest.fixture
def store(engine_store: Store) -> Store:
    return engine_store


def test_run_ids_are_consecutive_whatever_the_pages_and_events_of_each_run(store):
    users = [{"id": i, "firstName": "A", "lastName": "B", "email": f"u{i}@example.com", "age": 30} for i in (1, 2)]
    run_ids = [f"20261204_01020{n}_abcde{n}" for n in range(3)]
    for run_id in run_ids:
        run_ts = run_id.rsplit("_", 1)[0]
        out = transform_page(users, {})
        pages = [{"run_id": run_id, "run_ts": run_ts, "page": k, "skip": 2 * k, **out} for k in range(4)]
        for page in pages:
            store.load_pages([page])
        store.load_pages(pages)  # each page again: duplicates, as a redelivery brings them
    rows = store.conn.execute("SELECT id, run_id FROM etl_runs ORDER BY id").fetchall()
    assert [(r["id"], r["run_id"]) for r in rows] == [(1, run_ids[0]), (2, run_ids[1]), (3, run_ids[2])]
