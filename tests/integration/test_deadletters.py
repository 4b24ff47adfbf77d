"""Dead letters through the API on real parts: a page the database refused is listed with its reason, replayed once
its cause is fixed and loaded once; drops and replays need the operator token and are audited."""

import time
from contextlib import closing

import pytest

from etl_common.db import connect_writer
from tests.faults.conftest import wait_for
from tests.integration.test_api import AUTH, Api

OPERATOR = {"Authorization": "Bearer op-token"}
# A cause the operator can fix: the database refuses user 150 (page 1 of 100) until the trigger is dropped.
REFUSE = (
    "CREATE TRIGGER refuse_150 BEFORE INSERT ON raw_users WHEN NEW.user_id = 150 "
    "BEGIN SELECT RAISE(ABORT, 'user 150 refused'); END"
)


def _migrated(p) -> bool:
    try:
        with closing(p.db()) as conn:
            return conn.execute("SELECT count(*) FROM schema_migrations").fetchone()[0] >= 6
    except Exception:
        return False


def _sql(p, statement: str) -> None:
    with closing(connect_writer(p.db_path)) as conn:
        conn.execute(statement)


@pytest.fixture
def refused(make_source, make_pipeline):
    """A run of 250 users whose page 1 the saver dead-lettered (the run failed), and an API with an operator token."""
    source = make_source(count=250)
    p = make_pipeline(source)
    p.start_workers()
    wait_for(lambda: _migrated(p), what="the saver's migrations")
    _sql(p, REFUSE)
    assert p.extract().returncode == 0
    # The run fails when its page is dead-lettered, unless the saver applies phase1_complete after that (then the
    # run waits in 'transformed' for the missing page): either way it waits for the page.
    wait_for(lambda: p.redis.xlen(p.keys.dead_stream) == 1, what="the refused page dead-lettered")
    run = p.wait_run(("failed", "transformed"))
    wait_for(lambda: p.count("raw_users", run["run_id"]) == 150, what="pages 0 and 2 loaded")
    api = Api(p, "api-dead", ETL_API_OPERATOR_TOKEN="op-token")
    yield p, run, api
    api.client.close()


def test_a_refused_page_is_replayed_after_the_fix_and_loaded_once(refused):
    p, run, api = refused
    rid = run["run_id"]
    listed = api.get("/dead_letters", params={"run_id": rid})
    assert listed.status_code == 200, listed.text
    [dead] = listed.json()
    assert dead["stream"] == p.keys.processed_stream and dead["run_id"] == rid and dead["group"] == "saver"
    assert "user 150 refused" in dead["reason"] and "IntegrityError" in dead["reason"]
    assert p.count("raw_users", rid) == 150  # pages 0 and 2

    # The read token lists but does not act; no token at all is 401; the dead letter is still there.
    assert api.client.post("/dead_letters/replay", json={"run_id": rid}, headers=AUTH).status_code == 403
    assert api.client.post("/dead_letters/replay", json={"run_id": rid}).status_code == 401
    assert len(api.get("/dead_letters", params={"run_id": rid}).json()) == 1

    _sql(p, "DROP TRIGGER refuse_150")  # the cause is fixed
    copy = p.redis.xrange(p.keys.dead_stream, dead["id"], dead["id"])[0][1]
    r = api.client.post("/dead_letters/replay", json={"run_id": rid, "actor": "ops-alice"}, headers=OPERATOR)
    assert r.status_code == 200, r.text
    assert r.json()["done"] == 1 and r.json()["results"][0]["stream"] == p.keys.processed_stream
    done = p.wait_run(("succeeded",), run_id=rid)
    assert (done["raw_count"], done["valid_count"]) == (250, 250)
    assert sorted(p.user_ids("raw_users", rid)) == list(range(1, 251))
    assert sorted(p.user_ids("processed_users", rid)) == list(range(1, 251))
    assert (p.upload_dir / done["processed_file"]).read_bytes().count(b"\n") == 250
    assert api.get("/dead_letters", params={"run_id": rid}).json() == []

    # Replaying the same dead letter again: it is gone (missing). The same page dead-lettered twice and replayed
    # again adds nothing: the page ledger.
    again = api.client.post("/dead_letters/replay", json={"ids": [dead["id"]]}, headers=OPERATOR).json()
    assert again["done"] == 0 and again["results"][0]["status"] == "missing"
    dup = p.redis.xadd(p.keys.dead_stream, copy)
    assert api.client.post("/dead_letters/replay", json={"ids": [dup.decode()]}, headers=OPERATOR).json()["done"] == 1
    wait_for(lambda: p.redis.xlen(p.keys.processed_stream) == 0, what="the replayed copy consumed")
    time.sleep(0.5)
    assert p.count("raw_users", rid) == 250 and p.count("processed_users", rid) == 250
    assert p.wait_run(("succeeded",), run_id=rid)["finished_at"] == done["finished_at"]

    audit = api.get("/dead_letters/audit").json()
    assert [(a["action"], a["dead_id"]) for a in audit] == [("replay", dup.decode()), ("replay", dead["id"])]
    assert audit[1]["actor"] == "ops-alice" and audit[1]["run_id"] == rid and audit[1]["new_id"]


def test_a_poison_entry_is_dropped_by_the_operator_and_audited(refused):
    p, _, api = refused
    p.redis.xadd(p.keys.raw_stream, {"data": b"{not json"})
    poison = wait_for(
        lambda: [d for d in api.get("/dead_letters").json() if d["run_id"] == ""], what="the poison entry", step_s=0.2
    )
    assert "not JSON" in poison[0]["reason"] and poison[0]["stream"] == p.keys.raw_stream
    r = api.client.post("/dead_letters/drop", json={"ids": [poison[0]["id"]]}, headers=OPERATOR)
    assert r.status_code == 200 and r.json()["done"] == 1, r.text
    assert all(d["id"] != poison[0]["id"] for d in api.get("/dead_letters").json())
    assert api.get("/dead_letters/audit", params={"limit": 1}).json()[0]["action"] == "drop"
    assert p.redis.xlen(p.keys.raw_stream) == 0  # dropped, never replayed
    # A selection is exactly one of ids, run_id or all; unknown fields and malformed ids are 422.
    for body in ({}, {"ids": ["1-0"], "all": True}, {"all": True, "x": 1}, {"ids": ["not-an-id"]}):
        assert api.client.post("/dead_letters/drop", json=body, headers=OPERATOR).status_code == 422, body


def test_operator_routes_refuse_everyone_without_an_operator_token(make_source, make_pipeline):
    p = make_pipeline(make_source(count=10))
    p.start_workers()
    assert p.extract().returncode == 0
    p.wait_run(("succeeded",))
    api = Api(p, "api-no-operator")
    try:
        r = api.client.post("/dead_letters/drop", json={"all": True}, headers=AUTH)
        assert r.status_code == 403 and "ETL_API_OPERATOR_TOKEN" in r.json()["detail"]
        assert api.client.post("/retention", json={"apply": True}, headers=AUTH).status_code == 403
        assert api.get("/dead_letters").status_code == 200
    finally:
        api.client.close()
