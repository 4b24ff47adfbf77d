"""The data-quality report on a real SQLite file loaded by the saver's store from transformed pages."""

import statistics
from collections import Counter

import pytest

from dummyjson.users import BREAKAGES, DEPARTMENTS, make_bad_user, make_user
from saver import quality
from saver.store import Store
from transformer import validate
from transformer.enrich import load_departments
from transformer.transform import transform_page

BAD_EVERY = 4


def users(count: int, seed: int = 0) -> list:
    """Like ``python -m dummyjson --bad-every 4``: every 4th user broken, kinds in catalogue order."""
    return [
        make_bad_user(uid, uid // BAD_EVERY - 1, seed) if uid % BAD_EVERY == 0 else make_user(uid, seed)
        for uid in range(1, count + 1)
    ]


def load(store: Store, run_id: str, run_ts: str, records: list, page_size: int = 25) -> None:
    departments = load_departments()
    pages = [
        {"run_id": run_id, "run_ts": run_ts, "page": n, **transform_page(records[s : s + page_size], departments)}
        for n, s in enumerate(range(0, len(records), page_size))
    ]
    store.load_pages(pages)
    store.apply_event(
        {"type": "phase1_complete", "run_id": run_id, "run_ts": run_ts, "pages": len(pages), "records": len(records)}
    )


@pytest.fixture
def store(tmp_path):
    s = Store(str(tmp_path / "data.db"))
    yield s
    s.close()


def test_rule_names_are_the_transformers():
    assert quality.RULES == validate.RULES and quality.NOT_AN_OBJECT == validate.NOT_AN_OBJECT


def test_rules_count_each_broken_rule_once_per_record(store, tmp_path):
    unreadable = {"$unreadable": {"reason": "record: not valid JSON", "text": "{oops"}}  # the extractor's marker
    records = [*users(180), "not an object", {"id": 1, "company": "Acme"}, unreadable]
    load(store, "r1", "20261125_030000", records)
    report = quality.compute(tmp_path / "data.db", "r1")
    expected = Counter({rule: 0 for rule in (*quality.RULES, "record")})
    for uid in range(BAD_EVERY, 181, BAD_EVERY):
        expected.update({path for path, _ in BREAKAGES[(uid // BAD_EVERY - 1) % len(BREAKAGES)][1]})
    expected.update(["record", "firstName", "email", "age", "company.department", "record"])  # the last three
    assert report["rules"] == dict(expected)
    assert (report["records"], report["valid"], report["invalid"]) == (183, 180 - 45, 45 + 3)
    assert report["invalid_rate"] == round(48 / 183, 6)
    assert report["unclassified"] == 0


def test_columns_age_and_departments_match_a_plain_count(store, tmp_path):
    records = users(130)
    load(store, "r1", "20261125_030000", records)
    report = quality.compute(tmp_path / "data.db", "r1", chunk_rows=17)  # several chunks per table
    assert report == quality.compute(tmp_path / "data.db", "r1", chunk_rows=10_000)  # chunking changes nothing

    valid = [r for r in records if not validate.problems(r)]
    ages = [r["age"] for r in valid]
    age = report["age"]
    assert (age["count"], age["min"], age["max"]) == (len(valid), min(ages), max(ages))
    assert age["mean"] == round(statistics.mean(ages), 3) and age["median"] == statistics.median(ages)
    assert sum(age["bands"].values()) == len(valid)
    assert age["bands"]["18-24"] == sum(18 <= a < 25 for a in ages)
    assert age["bands"]["55-65"] == sum(55 <= a <= 65 for a in ages)

    by_dept = Counter(r["company"]["department"] for r in valid)
    assert {d["department"]: d["count"] for d in report["departments"]} == dict(by_dept)
    assert all(d["code"] and d["code"] != "UNKNOWN" for d in report["departments"])

    emails = [r.get("email") for r in records]
    assert report["columns"]["email"] == {
        "nulls": sum(e is None for e in emails),
        "blanks": 0,
        "distinct": len({e for e in emails if e is not None}),
    }
    assert report["columns"]["first_name"]["blanks"] == sum(
        isinstance(r["firstName"], str) and not r["firstName"].strip() for r in records
    )
    assert report["columns"]["department_code"]["distinct"] == len({d["code"] for d in report["departments"]})


def test_unknown_department_is_listed_with_its_code(store, tmp_path):
    records = [make_user(1), {**make_user(2), "company": {**make_user(2)["company"], "department": "Astrology"}}]
    load(store, "r1", "20261125_030000", records)
    departments = quality.compute(tmp_path / "data.db", "r1")["departments"]
    assert {"department": "Astrology", "code": "UNKNOWN", "count": 1} in departments


def test_change_against_the_previous_succeeded_run(store, tmp_path):
    load(store, "r1", "20261125_030000", users(100))
    assert quality.compute(tmp_path / "data.db", "r1")["previous"] is None
    store.mark("r1", "succeeded")
    load(store, "r2", "20261126_030000", [make_user(uid) for uid in range(1, 121)])
    report = quality.compute(tmp_path / "data.db", "r2")
    prev = report["previous"]
    assert prev["run_id"] == "r1" and prev["invalid_rate"] == 0.25 and report["invalid_rate"] == 0.0
    assert prev["invalid_rate_change"] == -0.25
    before = Counter(
        d["code"] for d in store.conn.execute("SELECT department_code AS code FROM processed_users WHERE run_id='r1'")
    )
    now = Counter(
        d["code"] for d in store.conn.execute("SELECT department_code AS code FROM processed_users WHERE run_id='r2'")
    )
    assert prev["departments_change"] == {c: now[c] - before[c] for c in set(now) | set(before)}
    assert len(DEPARTMENTS) >= len(prev["departments_change"]) > 0


def test_rows_without_named_rules_are_unclassified_not_guessed(store, tmp_path):
    page = {"run_id": "r1", "run_ts": "20261125_030000", "page": 0, **transform_page([make_bad_user(1, 0)], {})}
    del page["invalid"][0]["rules"]  # a page from a transformer that did not name the rules
    store.load_pages([page])
    report = quality.compute(tmp_path / "data.db", "r1")
    assert report["unclassified"] == 1 and sum(report["rules"].values()) == 0


def test_an_empty_run_has_a_report(store, tmp_path):
    store.apply_event({"type": "run_started", "run_id": "r1", "run_ts": "20261125_030000"})
    report = quality.compute(tmp_path / "data.db", "r1")
    assert (report["records"], report["invalid_rate"], report["departments"]) == (0, 0.0, [])
    assert report["age"]["median"] is None and set(report["age"]["bands"]) == set(quality.AGE_BANDS)


def test_unknown_run_is_a_lookup_error(store, tmp_path):
    with pytest.raises(LookupError):
        quality.compute(tmp_path / "data.db", "nope")


def test_the_newest_loaded_run_without_a_report_is_found_again(store, tmp_path):
    """What the saver resumes at start-up when it stopped while the report was being computed."""
    load(store, "r1", "20261125_030000", users(20))
    assert store.latest_run_without_quality() is None  # pages loaded, run not yet complete
    store.complete_runs()
    assert store.latest_run_without_quality() == "r1"
    store.save_quality("r1", quality.compute(tmp_path / "data.db", "r1"))
    assert store.latest_run_without_quality() is None and store.has_quality("r1")
    assert store.latest_invalid_ratio() == 5 / 20
