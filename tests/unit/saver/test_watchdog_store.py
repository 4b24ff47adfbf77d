"""The store's side of the run watchdog and of a full volume, on a real SQLite file."""

import sqlite3

import orjson
import pytest

from dummyjson.users import make_user
from saver import storage
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN = {"run_id": "r1", "run_ts": "20261125_030000"}


def _store_with_run(tmp_path) -> Store:
    store = Store(str(tmp_path / "data.db"))
    store.apply_event({"type": "run_started", **RUN, "trigger": "test"})
    for page in (0, 2):
        records = [make_user(page * 10 + i) for i in range(1, 4)]
        body = {
            "run_id": "r1",
            "run_ts": "20261125_030000",
            "page": page,
            **transform_page(records, load_departments()),
        }
        store.load_pages([body])
    store.apply_event(
        {"type": "phase1_complete", "run_id": "r1", "run_ts": "20261125_030000", "pages": 4, "records": 12}
    )
    return store


def test_a_run_is_failed_only_if_unchanged_since_the_watchdog_looked(tmp_path):
    store = _store_with_run(tmp_path)
    [seen] = store.in_flight()
    assert (seen["status"], seen["pages_expected"], seen["loaded_pages"]) == ("extracted", 4, 2)
    assert store.missing_pages("r1", 4) == [1, 3]
    # Progress after the look (another replica, or a page): the verdict is stale and changes nothing.
    store.conn.execute("UPDATE etl_runs SET updated_at='2099-01-01T00:00:00.000Z' WHERE run_id='r1'")
    assert not store.fail_unless_progressed("r1", seen["status"], seen["updated_at"], "stalled")
    assert store.run("r1")["status"] == "extracted"
    [seen] = store.in_flight()
    assert store.fail_unless_progressed("r1", seen["status"], seen["updated_at"], "stalled")
    assert (store.run("r1")["status"], store.run("r1")["error"]) == ("failed", "stalled")
    assert not store.fail_unless_progressed("r1", seen["status"], seen["updated_at"], "again")  # one verdict
    assert store.in_flight() == []
    store.close()


def test_a_full_volume_error_is_shown_on_runs_in_flight_and_cleared_alone(tmp_path):
    store = _store_with_run(tmp_path)
    store.note_in_flight(f"{storage.ERROR_PREFIX} on the volume of /x")
    assert store.run("r1")["error"].startswith(storage.ERROR_PREFIX)
    store.clear_in_flight(storage.ERROR_PREFIX)
    assert store.run("r1")["error"] is None
    store.conn.execute("UPDATE etl_runs SET error='another problem' WHERE run_id='r1'")
    store.clear_in_flight(storage.ERROR_PREFIX)
    assert store.run("r1")["error"] == "another problem"
    store.close()


@pytest.mark.parametrize(
    ("exc", "full"),
    [
        (sqlite3.OperationalError("database or disk is full"), True),
        (OSError(28, "No space left on device"), True),
        (OSError(122, "Disk quota exceeded"), True),
        (sqlite3.OperationalError("database is locked"), False),
        (OSError(13, "Permission denied"), False),
        (ValueError("no"), False),
    ],
)
def test_what_counts_as_a_full_volume(exc, full):
    assert storage.is_full(exc) is full


def _page(page: int, ids: list[int]) -> dict:
    return {**RUN, "page": page, **transform_page([make_user(i) for i in ids], load_departments())}


def test_overlapping_pages_are_a_duplicate_user_ids_warning_added_once(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    store.load_pages([_page(0, list(range(1, 11))), _page(1, list(range(6, 16)))])
    [(check, warning)] = store.invariant_violations("r1")
    assert check == "duplicate_user_ids"
    assert warning.startswith("duplicate user ids: 5 ids appear on 10 raw rows of the run (e.g. 6, 7, 8, 9, 10)")
    assert store.add_warnings("r1", [warning]) == [warning]
    assert store.add_warnings("r1", [warning]) == []  # checked again after a restart: still one warning
    assert orjson.loads(store.run("r1")["warnings"]) == [warning]
    store.close()


def test_rows_dropped_against_what_the_pages_announced_are_a_table_counts_warning(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    page = _page(0, [1, 2, 3])
    page["valid"].append(dict(page["valid"][0]))  # two valid records at one position: one row kept
    store.load_pages([page])
    [(check, warning)] = store.invariant_violations("r1")
    assert check == "table_counts"
    assert "processed_users has 3 rows, its pages announced 4" in warning
    store.close()


def test_a_clean_run_breaks_no_invariant(tmp_path):
    store = Store(str(tmp_path / "data.db"))
    store.load_pages([_page(0, list(range(1, 11))), _page(1, list(range(11, 21)))])
    assert store.invariant_violations("r1") == []
    store.close()
