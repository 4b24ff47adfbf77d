"""OpenLineage events of real runs, received by a real HTTP server and checked against OpenLineage's JSON schemas."""

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator
from referencing import Registry, Resource

import testbed as tb
from saver.lineage import Lineage
from saver.lineage_events import run_uuid
from saver.settings import SaverSettings

COUNT = 50
SPEC = Path(__file__).resolve().parents[1] / "openlineage"
# The facets the saver sends, by key, and where the schema of each lives.
FACETS = {
    ("run", "errorMessage"): "ErrorMessageRunFacet",
    # Added by the client itself.
    ("run", "tags"): "TagsRunFacet",
    ("run", "processing_engine"): "ProcessingEngineRunFacet",
    ("job", "tags"): "TagsJobFacet",
    ("job", "jobType"): "JobTypeJobFacet",
    ("dataset", "schema"): "SchemaDatasetFacet",
    ("input", "dataQualityMetrics"): "DataQualityMetricsInputDatasetFacet",
    ("input", "dataQualityAssertions"): "DataQualityAssertionsDatasetFacet",
    ("output", "outputStatistics"): "OutputStatisticsOutputDatasetFacet",
}


class Receiver:
    """A lineage endpoint (as Marquez serves it) that keeps every event it is sent."""

    def __init__(self) -> None:
        self.events: list[dict] = []
        events = self.events

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.path == "/api/v1/lineage":
                    events.append(json.loads(body))
                self.send_response(201 if self.path == "/api/v1/lineage" else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def wait(self, count: int, timeout_s: float = 60) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while len(self.events) < count and time.monotonic() < deadline:
            time.sleep(0.1)
        assert len(self.events) >= count, self.events
        return list(self.events)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.stop()


def validator(ref: str) -> Draft202012Validator:
    """A validator of OpenLineage's published schema ``ref`` (e.g. ``OpenLineage.json#/$defs/RunEvent``)."""
    resources = []
    for path in SPEC.glob("*.json"):
        doc = json.loads(path.read_text())
        resources.append((doc["$id"], Resource.from_contents(doc)))
    registry = Registry().with_resources(resources)
    main = json.loads((SPEC / ref.split("#")[0]).read_text())["$id"]
    return Draft202012Validator({"$ref": f"{main}#{ref.split('#')[1]}"}, registry=registry)


def check(event: dict) -> None:
    """The event and each of its facets are valid against OpenLineage's schemas."""
    errors = [e.message for e in validator("OpenLineage.json#/$defs/RunEvent").iter_errors(event)]
    assert errors == [], errors
    places = [("run", event["run"].get("facets", {})), ("job", event["job"].get("facets", {}))]
    for d in event.get("inputs", []):
        places += [("dataset", d.get("facets", {})), ("input", d.get("inputFacets", {}))]
    for d in event.get("outputs", []):
        places += [("dataset", d.get("facets", {})), ("output", d.get("outputFacets", {}))]
    for kind, facets in places:
        for key, facet in facets.items():
            name = FACETS[(kind, key)]
            errors = [e.message for e in validator(f"{name}.json#/$defs/{name}").iter_errors(facet)]
            assert errors == [], (key, errors)


def test_a_run_emits_start_and_complete_with_schema_and_quality_facets_then_fail(make_source, make_pipeline, receiver):
    src = make_source(count=COUNT)
    p = make_pipeline(src, ETL_PAGE_SIZE="25", OPENLINEAGE_URL=receiver.url, ETL_LINEAGE_NAMESPACE="etl-test")
    p.start_workers()
    done = p.extract()
    assert done.returncode == 0, done.stderr
    run = p.wait_run()
    events = receiver.wait(2)
    for event in events:
        check(event)
    assert [e["eventType"] for e in events] == ["START", "COMPLETE"]
    assert {e["run"]["runId"] for e in events} == {run_uuid(run["run_id"])}
    assert {(e["job"]["namespace"], e["job"]["name"]) for e in events} == {("etl-test", "dummyjson_users")}

    complete = events[1]
    (source,) = complete["inputs"]
    assert (source["namespace"], source["name"]) == (f"http://127.0.0.1:{src.port}", "/users")
    fields = {f["name"]: f for f in source["facets"]["schema"]["fields"]}
    assert fields["age"]["type"] == "integer" and fields["email"]["type"] == "string"
    company = {f["name"]: f for f in fields["company"]["fields"]}
    assert company["department"]["type"] == "string" and "city" in {f["name"] for f in company["address"]["fields"]}
    metrics = source["inputFacets"]["dataQualityMetrics"]
    assert metrics["rowCount"] == COUNT and metrics["columnMetrics"]["email"]["nullCount"] == 0
    assertions = source["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert {a["column"] for a in assertions} >= {"id", "firstName", "email", "age", "company.department"}
    assert all(a["success"] for a in assertions)

    assert len(complete["outputs"]) == 6
    tables = {
        o["name"]: o["outputFacets"]["outputStatistics"]["rowCount"]
        for o in complete["outputs"]
        if o["namespace"] == f"sqlite://{socket.gethostname()}{p.db_path.resolve()}"
    }
    assert (tables["raw_users"], tables["processed_users"], tables["invalid_users"]) == (COUNT, COUNT, 0)
    uploaded = [o for o in complete["outputs"] if o["namespace"].startswith("sftp://")]
    assert sorted(o["name"].split("/")[-2] for o in uploaded) == ["dlq", "processed_users", "raw_users"]
    assert all(o["outputFacets"]["outputStatistics"]["size"] > 0 for o in uploaded if "dlq" not in o["name"])

    # A run that fails (the source answers 500 for good): FAIL, with the run's error as a facet.
    time.sleep(1.1)
    src.faults([{"status": 500, "times": -1}])
    assert p.extract().returncode != 0
    failed = p.wait_run(("failed",), run_id=p.runs()[-1]["run_id"])
    events = receiver.wait(4)
    for event in events[2:]:
        check(event)
    assert [e["eventType"] for e in events[2:]] == ["START", "FAIL"]
    fail = events[3]
    assert fail["run"]["runId"] == run_uuid(failed["run_id"]) != run_uuid(run["run_id"])
    assert fail["run"]["facets"]["errorMessage"]["message"] == failed["error"]


def test_a_lineage_server_that_is_down_does_not_fail_the_run(make_source, make_pipeline):
    src = make_source(count=COUNT)
    down = f"http://127.0.0.1:{tb.free_port()}"
    p = make_pipeline(src, ETL_PAGE_SIZE="25", OPENLINEAGE_URL=down)
    p.start_workers()
    assert p.extract().returncode == 0
    assert p.wait_run()["status"] == "succeeded"
    deadline = time.monotonic() + 60
    while "lineage event not sent" not in p.procs["saver"].output() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert "lineage event not sent" in p.procs["saver"].output()


def test_nothing_is_set_up_when_lineage_is_not_configured(monkeypatch):
    for name in [n for n in __import__("os").environ if n.startswith("OPENLINEAGE")]:
        monkeypatch.delenv(name)
    assert Lineage(SaverSettings(_env_file=None)).client is None
    monkeypatch.setenv("OPENLINEAGE_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("OPENLINEAGE_DISABLED", "true")
    assert Lineage(SaverSettings(_env_file=None)).client is None
