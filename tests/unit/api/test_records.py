"""The API's record queries on a real SQLite file loaded by the saver: filters, search, sorting, paging, totals."""

import orjson
import pytest

from api import records
from api.db import Database
from dummyjson.users import make_bad_user, make_user
from saver.store import Store
from transformer.enrich import load_departments
from transformer.transform import transform_page

PAGES = 6
PAGE_SIZE = 7


def _users(page: int) -> list:
    """Page 2 is all invalid (no processed rows: the ledger must skip it); the others have one bad user."""
    first = page * PAGE_SIZE + 1
    if page == 2:
        return [make_bad_user(i, i) for i in range(first, first + PAGE_SIZE)]
    return [make_user(i) if i % 5 else make_bad_user(i, 0) for i in range(first, first + PAGE_SIZE)]


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    """Two runs of six pages each in a real database; the users of each run, in source order."""
    path = tmp_path_factory.mktemp("records") / "data.db"
    store = Store(str(path))
    departments = load_departments()
    for run_id, run_ts in (("r1", "20261125_030000"), ("r2", "20261126_030000")):
        pages = [
            {"run_id": run_id, "run_ts": run_ts, "page": n, **transform_page(_users(n), departments)}
            for n in range(PAGES)
        ]
        store.load_pages(pages)
    store.close()
    db = Database(str(path))
    yield db, [u for n in range(PAGES) for u in _users(n)]


def _page(db: Database, table: str, **query) -> dict:
    return records.page(db, records.TABLES[table], records.Query(**query), db.version())


def _ids(result: dict) -> list[int]:
    return [item["user_id"] for item in result["items"]]


def test_every_offset_of_a_run_gives_the_rows_of_source_order_there(loaded):
    """Paging through the page ledger lands exactly where skipping rows would, across an empty page."""
    db, users = loaded
    valid = [u["id"] for u in users if u["id"] % 5 and not (2 * PAGE_SIZE < u["id"] <= 3 * PAGE_SIZE)]
    invalid = [u["id"] for u in users if u["id"] not in valid]
    for table, expected in (("processed_users", valid), ("invalid_users", invalid), ("raw_users", [*range(1, 43)])):
        for offset in range(len(expected) + 2):
            got = _page(db, table, run_id="r1", limit=4, offset=offset)
            assert _ids(got) == expected[offset : offset + 4], (table, offset)
            assert got["total"] == len(expected) and (got["limit"], got["offset"]) == (4, offset)


def test_without_a_run_every_run_is_counted_and_source_order_runs_first(loaded):
    db, users = loaded
    got = _page(db, "raw_users", limit=100)
    assert got["total"] == 2 * len(users)
    assert [i["run_id"] for i in got["items"]] == ["r1"] * len(users) + ["r2"] * len(users)
    assert _ids(_page(db, "raw_users", limit=3, descending=True)) == [42, 41, 40]


def test_department_filter_ignores_case_and_code_filter_is_upper_cased(loaded):
    db, users = loaded
    engineering = [u["id"] for u in users if u["company"]["department"] == "Engineering"]
    got = _page(db, "raw_users", run_id="r1", department="engineering", limit=100)
    assert _ids(got) == engineering and got["total"] == len(engineering)
    code = _page(db, "processed_users", run_id="r1", department="Engineering", limit=1)["items"][0]["department_code"]
    by_code = _page(db, "processed_users", run_id="r1", department_code=code.lower(), limit=100)
    assert by_code["items"] and all(i["department"] == "Engineering" for i in by_code["items"])
    assert by_code["total"] == _page(db, "processed_users", run_id="r1", department="Engineering")["total"]


def test_search_is_a_substring_of_the_names_email_or_username_with_wildcards_taken_literally(loaded):
    db, users = loaded
    name = users[0]["lastName"]
    want = [
        u["id"]
        for u in users
        if any(name.lower()[1:4] in str(u.get(f, "")).lower() for f in ("firstName", "lastName", "email", "username"))
    ]
    assert _ids(_page(db, "raw_users", run_id="r1", q=name[1:4], limit=100)) == want
    assert _page(db, "raw_users", run_id="r1", q="%")["total"] == 0
    assert _page(db, "raw_users", run_id="r1", q="_")["total"] == 0


def test_other_sorts_break_ties_on_id_so_pages_are_stable(loaded):
    db, _ = loaded
    rows = _page(db, "raw_users", run_id="r1", sort="gender", limit=100)["items"]
    assert [(r["gender"] or "", r["id"]) for r in rows] == sorted((r["gender"] or "", r["id"]) for r in rows)
    pages = [_page(db, "raw_users", run_id="r1", sort="gender", limit=5, offset=o)["items"] for o in range(0, 42, 5)]
    assert [r["id"] for p in pages for r in p] == [r["id"] for r in rows]


def test_the_stored_record_is_passed_through_unparsed(loaded):
    db, _ = loaded
    (item,) = _page(db, "processed_users", run_id="r1", limit=1)["items"]
    assert isinstance(item["record"], orjson.Fragment)
    record = orjson.loads(orjson.dumps(item))["record"]
    assert record["id"] == item["user_id"] and record["department_code"] == item["department_code"]
    assert "password" not in record


def test_only_plain_source_ordered_queries_are_cheap():
    assert records.is_cheap(records.Query(run_id="r1", offset=500))
    assert not records.is_cheap(records.Query(q="ann"))
    assert not records.is_cheap(records.Query(department="Engineering"))
    assert not records.is_cheap(records.Query(sort="age"))
