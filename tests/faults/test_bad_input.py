"""A corpus of hostile records: each lands in invalid_users with its reason or is loaded safely; nothing crashes."""

import json

from dummyjson.users import DELETE, changed, make_user
from tests.support import lines

BASE = make_user(1)


def user(uid: int, **changes) -> dict:
    return changed(BASE, {"id": uid, **changes})


DEL = DELETE
HUGE = "x" * 1_000_000
SQL = "Robert'); DROP TABLE processed_users;--"
INJECT = '"}, {"id": 999, "firstName": "Injected'

# (record, expected error_reason or None when the record is valid)
CORPUS = [
    (user(1), None),
    (user(2, age=17), "age: 17 is below 18"),
    (user(3, age=66), "age: 66 is above 65"),
    (user(4, age=18), None),
    (user(5, age=65), None),
    (user(6, age=40.5), None),
    (user(7, age=True), "age: True is not a number"),
    (user(8, age=None), "age: missing"),
    (user(9, email="a@b"), "is not a valid address"),
    (user(10, email=DEL), "email: missing"),
    (user(11, email=["x@y.com"]), "email: ['x@y.com'] is not a string"),
    (user(12, firstName=""), "firstName: is blank"),
    (user(13, firstName=None), "firstName: missing"),
    (user(14, firstName=42), "firstName: 42 is not a string"),
    (user(15, company={"name": "No dept"}), "company.department: missing"),
    (user(16, company="ACME"), "company: 'ACME' is not an object"),
    (user(17, company={"department": "   "}), "company.department: is empty"),
    (user("18"), "id: '18' is not an integer"),
    (user(19.0), "id: 19.0 is not an integer"),
    (user(None), "id: missing"),
    (
        user(21, age=12, email="nope", firstName=" ", company=None),
        "firstName: is blank; email: 'nope' is not a valid address",
    ),
    (user(22, firstName=HUGE), None),
    (user(23, firstName="Zoë 李 😀", lastName="Ñandú"), None),
    (user(24, firstName=SQL, username=SQL), None),
    (user(25, firstName=INJECT), None),
    (user(26), None),
    (user(26), None),  # duplicate id in one run: both rows kept (unique on run, page, position)
    ("just a string", "record: expected a JSON object, got str"),
    (12345, "record: expected a JSON object, got int"),
    (None, "record: expected a JSON object, got NoneType"),
    ([1, 2, 3], "record: expected a JSON object, got list"),
    (user(32, company={"department": "Quantum Basket Weaving"}), None),
]


def test_hostile_corpus_is_sorted_exactly(make_source, make_pipeline):
    users = [r for r, _ in CORPUS]
    src = make_source(users=users)
    p = make_pipeline(src, ETL_PAGE_SIZE="10")
    p.start_workers()
    assert p.extract().returncode == 0
    run = p.wait_run()
    rid = run["run_id"]
    expected_valid = [i for i, (_, reason) in enumerate(CORPUS) if reason is None]
    expected_invalid = {i: reason for i, (_, reason) in enumerate(CORPUS) if reason is not None}
    assert (run["valid_count"], run["invalid_count"], run["raw_count"]) == (
        len(expected_valid),
        len(expected_invalid),
        len(CORPUS),
    )
    with p.db() as db:
        valid_pos = [
            r["page"] * 10 + r["position"]
            for r in db.execute(
                "SELECT page, position FROM processed_users WHERE run_id=? ORDER BY page, position", (rid,)
            )
        ]
        invalid = {
            r["page"] * 10 + r["position"]: r for r in db.execute("SELECT * FROM invalid_users WHERE run_id=?", (rid,))
        }
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        stored = {
            r["position"] + 10 * r["page"]: r
            for r in db.execute("SELECT * FROM processed_users WHERE run_id=?", (rid,))
        }
    assert valid_pos == expected_valid
    assert set(invalid) == set(expected_invalid)
    for pos, reason in expected_invalid.items():
        assert reason in invalid[pos]["error_reason"], (pos, invalid[pos]["error_reason"])
    assert "processed_users" in tables
    # Non-objects are kept verbatim as raw_line.
    assert json.loads(invalid[27]["raw_line"]) == "just a string" and invalid[30]["raw_line"] == "[1,2,3]"
    # Hostile text is stored as data, byte for byte.
    assert stored[21]["first_name"] == HUGE
    assert stored[22]["first_name"] == "Zoë 李 😀"
    assert stored[23]["first_name"] == SQL and stored[24]["first_name"] == INJECT
    assert stored[31]["department_code"] == "UNKNOWN"
    assert [r["user_id"] for r in stored.values()].count(26) == 2
    dlq = lines(p.data_dir / run["dlq_file"])
    assert len(dlq) == len(expected_invalid)
    assert all("error_reason" in d for d in dlq)
    assert p.procs["transformer"].alive() and p.procs["saver"].alive()
