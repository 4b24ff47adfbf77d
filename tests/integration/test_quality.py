"""Quality reports and exports of real runs: services load runs with injected broken records, the API serves them."""

import csv
import io
from collections import Counter

import pyarrow.parquet as pq
import pytest

import testbed as tb
from dummyjson.server import Source
from dummyjson.users import BREAKAGES, make_user
from tests.integration.test_api import Api
from tests.support import Pipeline, SourceServer, Stack

RULES = ("id", "firstName", "email", "age", "company.department", "record")
BAD_EVERY = 7
SECRET_COLUMNS = {"record", "raw_line", "password", "ssn", "ein", "bank", "crypto", "failed_rules"}
TYPED = ("id", "run_id", "user_id", "first_name", "last_name", "email", "username", "age", "gender", "department")
EXPORT_COLUMNS = {
    "raw_users": (*TYPED, "inserted_at"),
    "processed_users": (*TYPED, "department_code", "title", "role", "city", "state", "user_agent", "inserted_at"),
    "invalid_users": (*TYPED, "error_reason", "inserted_at"),
}


def injected_rules(count: int, bad_every: int) -> Counter:
    """The rules the source's broken users break, from its catalogue of breakages (not from the validator)."""
    rules = Counter(dict.fromkeys(RULES, 0))
    for uid in range(bad_every, count + 1, bad_every):
        rules.update({path for path, _ in BREAKAGES[(uid // bad_every - 1) % len(BREAKAGES)][1]})
    return rules


def odd_users() -> tuple[list, Counter]:
    """Records that are not objects or break rules in other shapes, and the rules each breaks."""
    users = [make_user(i) for i in range(1, 41)]
    users[3] = "not a user"
    users[7] = [1, 2]
    users[11] = {**make_user(12), "company": "Acme"}
    users[15] = {**make_user(16), "firstName": None, "age": 70, "email": "x@"}
    users[19] = {**make_user(20), "id": 20.5, "age": True}
    return users, Counter({"id": 1, "firstName": 1, "email": 1, "age": 2, "company.department": 1, "record": 2})


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server, sftp_server):
    """Three real runs loaded by the services: clean, every 7th user broken, odd records; an API over them."""
    tmp = tmp_path_factory.mktemp("quality")
    (tmp / "upload").mkdir()
    odd, _ = odd_users()
    sources = [
        SourceServer(Source(120, 3)).start(),
        SourceServer(Source(330, 4, BAD_EVERY)).start(),
        SourceServer(Source(0, users=odd)).start(),
    ]
    upload = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp / "upload")}
    p = Pipeline(tmp / "p", redis_server.url, upload, sources[0].url)
    p.start_workers()
    try:
        runs = p.load_runs(sources)
        for run in runs:
            tb.wait_for_quality(p.db_path, run["run_id"], logs=p.logs)
        api = Api(p, "api-quality")
        yield Stack(p, runs, api)
        api.client.close()
    finally:
        p.stop_all()
        for s in sources:
            s.stop()


def quality(api: Api, run) -> dict:
    r = api.get(f"/etl_runs/{run['run_id']}/quality")
    assert r.status_code == 200, r.text
    return r.json()


class TestReport:
    def test_rule_counts_equal_the_injected_broken_records(self, api, runs):
        report = quality(api, runs[1])
        assert report["rules"] == dict(injected_rules(330, BAD_EVERY))
        assert (report["records"], report["invalid"]) == (330, 330 // BAD_EVERY)
        assert report["valid"] == 330 - 330 // BAD_EVERY
        assert report["invalid_rate"] == round((330 // BAD_EVERY) / 330, 6)
        assert report["unclassified"] == 0

    def test_records_of_other_shapes_count_under_their_rules(self, api, runs):
        _, expected = odd_users()
        report = quality(api, runs[2])
        assert report["rules"] == dict(expected)
        assert (report["records"], report["invalid"]) == (40, 5)

    def test_a_clean_run_breaks_no_rule(self, api, runs):
        report = quality(api, runs[0])
        assert report["rules"] == dict.fromkeys(RULES, 0) and report["invalid_rate"] == 0
        assert report["previous"] is None

    def test_by_run_id_and_by_numeric_id_alike(self, api, runs):
        by_id = api.get(f"/etl_runs/{runs[1]['id']}/quality").json()
        assert by_id == quality(api, runs[1])

    def test_profiles_agree_with_the_database(self, api, runs, pipeline):
        report, run_id = quality(api, runs[1]), runs[1]["run_id"]
        with pipeline.db() as db:
            codes = dict(
                db.execute(
                    "SELECT department_code, count(*) FROM processed_users WHERE run_id=? GROUP BY 1", (run_id,)
                ).fetchall()
            )
            ages = db.execute(
                "SELECT min(age), max(age), count(*) FROM processed_users WHERE run_id=?", (run_id,)
            ).fetchone()
            emails = db.execute(
                "SELECT count(*) - count(email), count(DISTINCT email) FROM raw_users WHERE run_id=?", (run_id,)
            ).fetchone()
        by_code = Counter()
        for d in report["departments"]:
            by_code[d["code"]] += d["count"]
        assert dict(by_code) == codes
        assert (report["age"]["min"], report["age"]["max"], report["age"]["count"]) == tuple(ages)
        assert sum(report["age"]["bands"].values()) == report["valid"]
        assert (report["columns"]["email"]["nulls"], report["columns"]["email"]["distinct"]) == tuple(emails)

    def test_change_against_the_previous_succeeded_run(self, api, runs):
        first, second = quality(api, runs[0]), quality(api, runs[1])
        prev = second["previous"]
        assert prev["run_id"] == runs[0]["run_id"] and prev["invalid_rate"] == 0
        assert prev["invalid_rate_change"] == second["invalid_rate"]
        before = Counter({d["code"]: 0 for d in first["departments"]})
        for d in first["departments"]:
            before[d["code"]] += d["count"]
        now = Counter()
        for d in second["departments"]:
            now[d["code"]] += d["count"]
        assert prev["departments_change"] == {c: now[c] - before[c] for c in set(now) | set(before)}

    def test_unknown_run_is_404(self, api):
        r = api.get("/etl_runs/no-such-run/quality")
        assert r.status_code == 404 and "no-such-run" in r.json()["detail"]

    def test_needs_the_token(self, api, runs):
        assert api.get(f"/etl_runs/{runs[0]['id']}/quality", auth=False).status_code == 401


def test_a_run_that_never_loaded_has_no_report_yet(make_source, make_pipeline):
    """A run whose extraction failed: the header exists, the report does not (409, saying why)."""
    source = make_source(count=50)
    source.faults([{"status": 503, "times": -1}])
    p = make_pipeline(source)
    p.start("saver")
    assert p.extract().returncode == 1
    run = p.wait_run(("failed",))
    api = Api(p, "api")
    try:
        r = api.get(f"/etl_runs/{run['run_id']}/quality")
        assert r.status_code == 409
        assert (
            r.json()["detail"] == f"run {run['run_id']} has no quality report yet: the run is failed; the saver "
            "computes it once the run's pages are all loaded"
        )
    finally:
        api.client.close()


class TestExports:
    @pytest.mark.parametrize("table", list(EXPORT_COLUMNS))
    def test_csv_round_trips_every_row_with_typed_columns_only(self, api, runs, pipeline, table):
        run_id = runs[1]["run_id"]
        r = api.get(f"/data/{table}.csv", params={"run_id": run_id})
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"] == f'attachment; filename="{table}_{run_id}.csv"'
        rows = list(csv.DictReader(io.StringIO(r.text)))
        assert tuple(rows[0]) == EXPORT_COLUMNS[table] and not SECRET_COLUMNS & set(rows[0])
        assert len(rows) == pipeline.count(table, run_id)
        ids = [int(row["user_id"]) if row["user_id"] else None for row in rows]
        assert ids == pipeline.user_ids(table, run_id)

    @pytest.mark.parametrize("table", list(EXPORT_COLUMNS))
    def test_parquet_round_trips_every_row_with_typed_columns_only(self, api, runs, pipeline, table):
        run_id = runs[1]["run_id"]
        r = api.get(f"/data/{table}.parquet", params={"run_id": run_id})
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/vnd.apache.parquet"
        assert r.headers["content-disposition"] == f'attachment; filename="{table}_{run_id}.parquet"'
        data = pq.read_table(io.BytesIO(r.content))
        assert tuple(data.column_names) == EXPORT_COLUMNS[table]
        assert data.num_rows == pipeline.count(table, run_id)
        assert data.column("user_id").to_pylist() == pipeline.user_ids(table, run_id)
        assert str(data.schema.field("age").type) == "double" and str(data.schema.field("id").type) == "int64"

    def test_the_two_formats_hold_the_same_values(self, api, runs):
        params = {"run_id": runs[2]["run_id"]}
        rows = list(csv.DictReader(io.StringIO(api.get("/data/invalid_users.csv", params=params).text)))
        table = pq.read_table(io.BytesIO(api.get("/data/invalid_users.parquet", params=params).content))
        assert [r["error_reason"] for r in rows] == table.column("error_reason").to_pylist()
        assert [float(r["age"]) if r["age"] else None for r in rows] == table.column("age").to_pylist()
        assert "record: expected a JSON object, got str" in [r["error_reason"] for r in rows]

    @pytest.mark.parametrize(
        "params",
        [
            {"department": "engineering"},
            {"department_code": "sal", "sort": "age", "order": "desc"},
            {"q": "son"},
            {"sort": "email", "offset": "10", "limit": "25"},
        ],
    )
    def test_same_filters_and_order_as_the_paged_route(self, api, runs, params):
        params = {**params, "run_id": runs[1]["run_id"]}
        paged = api.get("/data/processed_users", params={"limit": "500", "offset": "0", **params})
        rows = list(csv.DictReader(io.StringIO(api.get("/data/processed_users.csv", params=params).text)))
        table = pq.read_table(io.BytesIO(api.get("/data/processed_users.parquet", params=params).content))
        expected = [item["id"] for item in paged.json()["items"]]
        if "limit" not in params:
            assert len(expected) == int(paged.headers["x-total-count"]) > 0
        assert [int(r["id"]) for r in rows] == expected == table.column("id").to_pylist()

    def test_every_run_without_a_run_filter(self, api, pipeline, runs):
        rows = list(csv.DictReader(io.StringIO(api.get("/data/raw_users.csv").text)))
        assert len(rows) == sum(pipeline.count("raw_users", r["run_id"]) for r in runs)

    def test_an_empty_selection_is_a_header_or_an_empty_table(self, api):
        r = api.get("/data/processed_users.csv", params={"run_id": "none"})
        assert list(csv.reader(io.StringIO(r.text))) == [list(EXPORT_COLUMNS["processed_users"])]
        table = pq.read_table(io.BytesIO(api.get("/data/processed_users.parquet", params={"run_id": "none"}).content))
        assert table.num_rows == 0 and tuple(table.column_names) == EXPORT_COLUMNS["processed_users"]

    @pytest.mark.parametrize("fmt", ["csv", "parquet"])
    def test_need_the_token_and_valid_parameters(self, api, fmt):
        assert api.get(f"/data/raw_users.{fmt}", auth=False).status_code == 401
        r = api.get(f"/data/raw_users.{fmt}", params={"sort": "record"})
        assert r.status_code == 422 and "sort" in r.text
