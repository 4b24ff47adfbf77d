"""Schema drift and the data contract on real runs: the source changes shape between runs, the services report it."""

import time

import httpx
import orjson

import testbed as tb
from tests.integration.test_api import Api

COUNT = 60
ADDED = "schema drift against run {prev}: field added: nickname (string)"
REMOVED = "schema drift against run {prev}: field removed: maidenName"
AGE = "schema drift against run {prev}: age changed type from integer to string"


def run_once(p, src, **changes) -> dict:
    """One run through ``extractor once`` with the source's schema switch set; its row once it has ended."""
    src.faults(**changes)
    before = len(p.runs())
    done = p.extract()
    assert done.returncode == 0, done.stdout + done.stderr
    run = tb.wait_for_run(p.db_path, ("succeeded",), count=before + 1, logs=p.logs)
    tb.wait_for_quality(p.db_path, run["run_id"], logs=p.logs)
    time.sleep(1.1)  # the runs' file names differ by their start second
    return dict(run)


def metric(port: int, line: str) -> bool:
    return line in httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text.splitlines()


def test_a_changed_source_is_named_in_warnings_report_metric_and_api(make_source, make_pipeline):
    """Evolve (the default): a field added, one dropped, age as text; every channel names each change."""
    src = make_source(count=COUNT)
    p = make_pipeline(src, ETL_PAGE_SIZE="25")
    ops = tb.free_port()
    p.start("transformer")
    p.start("saver", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    api = Api(p, "api")
    try:
        first = run_once(p, src)
        assert first["warnings"] is None  # no previous run, and the shipped contract fits the generated users
        changed = run_once(p, src, schema_change=True)
        expected = [w.format(prev=first["run_id"]) for w in (ADDED, REMOVED, AGE)]
        warnings = orjson.loads(changed["warnings"])
        assert warnings[:3] == expected
        assert warnings[3].startswith(
            f"contract users.v1: {COUNT} records broke it, loaded as they are (policy evolve)"
        )
        assert "age (string x60; expected integer)" in warnings[3] and "nickname (unknown field x60" in warnings[3]
        assert api.get(f"/etl_runs/{changed['run_id']}").json()["warnings"] == warnings

        drift = [(c["change"], c["field"], c["before"], c["after"]) for c in api_schema(api, changed)["drift"]]
        assert drift == [
            ("added", "nickname", None, ["string"]),
            ("removed", "maidenName", ["string"], None),
            ("type_changed", "age", ["integer"], ["string"]),
        ]
        report = api.get(f"/etl_runs/{changed['run_id']}/quality").json()
        assert [(c["change"], c["field"]) for c in report["schema"]["drift"]] == [(c, f) for c, f, _, _ in drift]
        assert report["schema"]["previous_run_id"] == first["run_id"]
        assert report["schema"]["contract"]["records"] == COUNT

        observed = api_schema(api, changed)
        assert observed["records"] == COUNT and observed["previous_run_id"] == first["run_id"]
        assert observed["fields"]["age"]["types"] == {"string": COUNT}
        assert observed["fields"]["nickname"] == {
            "present": COUNT,
            "types": {"string": COUNT},
            "nulls": 0,
            "missing": 0,
            "null_rate": 0.0,
        }
        assert "maidenName" not in observed["fields"] and observed["fields"]["company.address.city"]["present"] == COUNT
        assert api_schema(api, first)["drift"] == [] and api_schema(api, first)["previous_run_id"] is None

        for change in ("added", "removed", "type_changed"):
            assert metric(ops, f'etl_schema_drift_total{{change="{change}"}} 1.0'), change
        # Evolve keeps the records as they came; age as text then breaks the business rule, not the contract.
        with p.db() as conn:
            rows = conn.execute(
                "SELECT error_reason, failed_rules, record FROM invalid_users WHERE run_id=?", (changed["run_id"],)
            ).fetchall()
        assert len(rows) == COUNT and {r["failed_rules"] for r in rows} == {"age"}
        assert all("nickname" in orjson.loads(r["record"]) for r in rows)

        # The same shape again: no drift against the changed run (it succeeded), only the contract line.
        again = run_once(p, src, schema_change=True)
        assert [w for w in orjson.loads(again["warnings"]) if w.startswith("schema drift")] == []
    finally:
        api.client.close()


def api_schema(api: Api, run: dict) -> dict:
    r = api.get(f"/etl_runs/{run['run_id']}/schema")
    assert r.status_code == 200, r.text
    return r.json()


def test_freeze_rejects_records_naming_field_and_type_where_evolve_loads_them(make_source, make_pipeline):
    """A field added and one dropped (age untouched): evolve loads every record; freeze makes each invalid."""
    src = make_source(count=COUNT)
    evolve = make_pipeline(src, ETL_PAGE_SIZE="25")
    evolve.start_workers()
    loaded = run_once(evolve, src, schema_change=["add", "drop"])
    assert (loaded["valid_count"], loaded["invalid_count"]) == (COUNT, 0)
    with evolve.db() as conn:
        records = [
            orjson.loads(r[0]) for r in conn.execute("SELECT record FROM raw_users WHERE run_id=?", (loaded["run_id"],))
        ]
    assert len(records) == COUNT and all("nickname" in r and "maidenName" not in r for r in records)
    evolve.stop_all()

    frozen = make_pipeline(src, ETL_PAGE_SIZE="25", ETL_CONTRACT_POLICY="freeze")
    ops = tb.free_port()
    frozen.start("transformer", ETL_OPS_PORT=str(ops), ETL_OPS_HOST="127.0.0.1")
    frozen.start("saver")
    rejected = run_once(frozen, src, schema_change=True)
    assert (rejected["valid_count"], rejected["invalid_count"]) == (0, COUNT)
    with frozen.db() as conn:
        rows = conn.execute(
            "SELECT error_reason, failed_rules FROM invalid_users WHERE run_id=?", (rejected["run_id"],)
        ).fetchall()
    for row in rows:
        reasons = row["error_reason"].split("; ")
        assert "age: string where contract users.v1 expects integer" in reasons, row["error_reason"]
        assert "nickname: unknown field (not in contract users.v1)" in reasons, row["error_reason"]
        assert set(row["failed_rules"].split(",")) == {"age", "contract"}
    assert metric(ops, f'etl_contract_violations_total{{policy="freeze"}} {COUNT}.0')
