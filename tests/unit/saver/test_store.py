"""The saver's store on a real SQLite file: pages from the transformer, idempotent loads, typed columns."""

import orjson

from dummyjson.users import make_bad_user, make_user
from saver.store import Store
from saver.userrows import _with_code
from transformer.enrich import load_departments
from transformer.transform import transform_page

RUN = {"run_id": "r1", "run_ts": "20261125_030000", "page": 0}


def test_code_is_spliced_into_the_record_json():
    assert orjson.loads(_with_code(b'{"a":1}', "ENG")) == {"a": 1, "department_code": "ENG"}
    assert orjson.loads(_with_code(b"{}", "ENG")) == {"department_code": "ENG"}


def test_a_transformed_page_loads_once_with_every_record_in_its_table(tmp_path):
    records = [make_user(1), make_bad_user(2, 0), "not an object", make_user(4)]
    page = {**RUN, **transform_page(records, load_departments())}
    assert [v["pos"] for v in page["valid"]] == [0, 3] and [i["pos"] for i in page["invalid"]] == [1, 2]
    store = Store(str(tmp_path / "data.db"))
    assert store.load_pages([page]) == [("r1", 0)]
    assert store.load_pages([page]) == []  # the ledger makes a second load a no-op
    db = store.conn
    processed = [orjson.loads(r[0]) for r in db.execute("SELECT record FROM processed_users ORDER BY position")]
    assert [p["id"] for p in processed] == [1, 4]
    assert all(p["department_code"] and "password" not in p for p in processed)
    assert processed[0] == {**page["raw"][0], "department_code": processed[0]["department_code"]}
    invalid = db.execute("SELECT position, user_id, error_reason, raw_line, record FROM invalid_users").fetchall()
    assert [(r[0], r[1]) for r in invalid] == [(1, 2), (2, None)]
    assert invalid[0][2] == "age: 17 is below 18" and invalid[0][4] is not None
    assert invalid[1][3] == '"not an object"' and invalid[1][4] is None
    assert db.execute("SELECT count(*) FROM raw_users").fetchone()[0] == 4
    run = store.run("r1")
    assert (run["raw_count"], run["valid_count"], run["invalid_count"]) == (4, 2, 2)
    store.close()
