"""The API refuses what it does not understand, and every route that takes a run takes it in the same forms.

A real API process over a database loaded by a real run (Redis, SFTP, SQLite).
"""

import re
from urllib.parse import quote

import httpx
import pytest

from dummyjson.server import Source
from tests.integration.test_api import AUTH, TABLES, Api
from tests.support import Pipeline, SourceServer, Stack


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server, sftp_server):
    """One run with invalid records, and an API over it."""
    tmp = tmp_path_factory.mktemp("api-params")
    upload = tmp / "upload"
    upload.mkdir()
    source = SourceServer(Source(60, 0, 10)).start()
    p = Pipeline(tmp / "p", redis_server.url, {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(upload)}, source.url)
    p.start_workers()
    try:
        runs = p.load_runs([source])
        api = Api(p, "api")
        yield Stack(p, runs, api)
        api.client.close()
    finally:
        p.stop_all()
        source.stop()


def get_routes(api) -> list[str]:
    """Every GET path of the OpenAPI document."""
    doc = api.get("/openapi.json").json()
    return sorted(path for path, ops in doc["paths"].items() if "get" in ops)


def concrete(path: str, run) -> str:
    return path.replace("{run}", str(run["id"]))


def unknown(resp: httpx.Response) -> list[str]:
    """The names a 422 says are unknown query parameters."""
    assert resp.status_code == 422, resp.text
    return [e["loc"][1] for e in resp.json()["detail"] if e["type"] == "unknown_parameter"]


def test_every_route_names_a_parameter_it_does_not_take(api, runs):
    paths = [*get_routes(api), "/metrics"]
    assert len(paths) > 10
    for path in paths:
        resp = api.get(concrete(path, runs[0]), params={"no_such_filter": "x"})
        assert unknown(resp) == ["no_such_filter"], path
        assert "no_such_filter" in resp.json()["detail"][0]["msg"]


def test_department_code_is_refused_where_the_table_has_none(api, runs):
    resp = api.get("/data/invalid_users", params={"department_code": "ENG"})
    assert unknown(resp) == ["department_code"]
    assert "this route takes" in resp.json()["detail"][0]["msg"]
    assert api.get("/data/processed_users", params={"department_code": "ENG"}).status_code == 200


@pytest.mark.parametrize("path", ["/etl_runs", *(f"/data/{t}" for t in TABLES), "/summary", "/data/raw_users.csv"])
def test_a_misspelt_run_filter_is_refused_with_the_name_it_meant(api, runs, path):
    resp = api.get(path, params={"runid": runs[0]["run_id"]})
    assert unknown(resp) == ["runid"]
    msg = resp.json()["detail"][0]["msg"]
    if "run_id" in re.sub(r"^.*this route takes", "", msg):
        assert "did you mean run_id?" in msg


def test_several_unknown_names_are_all_named_once(api):
    resp = api.get("/data/raw_users?foo=1&bar=2&foo=3&limit=1")
    assert unknown(resp) == ["foo", "bar"]


def test_declared_parameters_still_work(api, runs):
    resp = api.get("/data/raw_users", params={"run_id": runs[0]["run_id"], "limit": 2, "sort": "age", "order": "desc"})
    assert resp.status_code == 200 and len(resp.json()["items"]) == 2
    assert api.get("/etl_runs", params={"status": "succeeded", "limit": 1}).status_code == 200


def _run_routes(run_text: str) -> list[str]:
    q = quote(run_text)
    return [
        f"/etl_runs/{q}",
        f"/etl_runs/{q}/quality",
        f"/summary?run_id={q}",
        *(f"/data/{t}?run_id={q}&limit=500" for t in TABLES),
        *(f"/data/{t}.csv?run_id={q}" for t in TABLES),
    ]


def test_every_route_that_takes_a_run_takes_its_id_or_its_run_id(api, runs):
    run = runs[0]
    for by_id, by_text in zip(_run_routes(str(run["id"])), _run_routes(run["run_id"]), strict=True):
        a, b = api.get(by_id), api.get(by_text)
        assert a.status_code == b.status_code == 200, (by_id, a.text)
        assert a.content == b.content, by_id
    assert api.get(f"/summary?run_id={run['id']}").json()["run_id"] == run["run_id"]
    rows = api.get(f"/data/raw_users?run_id={run['id']}&limit=500").json()
    assert rows["total"] == 60 and {r["run_id"] for r in rows["items"]} == {run["run_id"]}


def test_an_id_that_names_no_run_is_the_same_answer_as_an_unknown_run_id(api):
    for route in ("/etl_runs/{}", "/summary?run_id={}"):
        assert api.get(route.format(987654)).status_code == api.get(route.format("no-such-run")).status_code == 404
    assert api.get("/data/raw_users?run_id=987654", headers=AUTH).json()["total"] == 0
