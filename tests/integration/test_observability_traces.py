"""One run is one trace across the services (OTLP to a receiver on loopback), and page log lines carry it."""

import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

import testbed as tb


@dataclass
class Span:
    service: str
    version: str
    name: str
    trace_id: str
    span_id: str
    parent: str
    attrs: dict


class OtlpReceiver:
    """The OTLP/HTTP traces endpoint of a collector: decodes protobuf exports and keeps the spans."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and self.headers["Content-Type"] == "application/x-protobuf"
                if ok:
                    receiver.add(ExportTraceServiceRequest.FromString(body))
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def add(self, req: ExportTraceServiceRequest) -> None:
        for rs in req.resource_spans:
            res = {a.key: a.value.string_value for a in rs.resource.attributes}
            for ss in rs.scope_spans:
                for s in ss.spans:
                    attrs = {a.key: _value(a.value) for a in s.attributes}
                    span = Span(
                        res.get("service.name", ""),
                        res.get("service.version", ""),
                        s.name,
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        attrs,
                    )
                    with self.lock:
                        self.spans.append(span)

    def snapshot(self) -> list[Span]:
        with self.lock:
            return list(self.spans)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _value(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def test_one_run_is_one_trace_with_correct_parents(make_source, make_pipeline):
    receiver = OtlpReceiver()
    source = make_source(count=250)
    p = make_pipeline(source)
    try:
        otel = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_BSP_SCHEDULE_DELAY": "100"}
        p.start_workers(**otel)
        done = p.extract(**otel)
        assert done.returncode == 0, done.stdout + done.stderr
        run_id = p.wait_run(("succeeded",))["run_id"]
        api_port = tb.free_port()
        p.start("api", ETL_API_PORT=str(api_port), ETL_API_HOST="127.0.0.1", **otel)
        tb.wait_port(api_port, proc=p.procs["api"].popen)
        # A caller's W3C trace context is continued by the API's request span.
        caller = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"
        resp = httpx.get(
            f"http://127.0.0.1:{api_port}/etl_runs",
            headers={"Authorization": "Bearer test-token", "traceparent": caller},
        )
        assert resp.status_code == 200

        def names() -> set[str]:
            return {s.name for s in receiver.snapshot()}

        wanted = {
            "extract.run",
            "extract.page",
            "transform.page",
            "transform.end",
            "load.pages",
            "sqlite.transaction",
            "save.finish",
            "files.write",
            "sftp.upload",
            "GET /etl_runs",
        }
        deadline = time.monotonic() + 20
        while not wanted <= names() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert wanted <= names(), f"missing spans: {wanted - names()}"
        spans = receiver.snapshot()
    finally:
        p.stop_all()  # before the receiver goes, so shutdown flushes do not retry against a closed port
        receiver.stop()

    # FastAPI's own request tracing, on the provider etl_common.tracing installs.
    api_spans = [s for s in spans if s.service == "api"]
    (server,) = [s for s in api_spans if s.name == "GET /etl_runs"]
    assert (server.trace_id, server.parent) == ("ab" * 16, "cd" * 8)
    assert server.attrs["http.route"] == "/etl_runs" and server.attrs["http.response.status_code"] == 200
    assert {s.trace_id for s in api_spans} == {"ab" * 16}
    spans = [s for s in spans if s.service != "api"]
    by_name: dict[str, list[Span]] = {}
    for s in spans:
        by_name.setdefault(s.name, []).append(s)
    (root,) = by_name["extract.run"]
    assert root.attrs["etl.run_id"] == run_id and root.parent == ""
    trace_id = root.trace_id

    # Resource attributes name each service and its version.
    assert {s.service for s in spans} == {"extractor", "transformer", "saver"}
    assert all(s.version for s in spans)
    # Every span of the run is in the run's one trace.
    assert {s.trace_id for s in spans} == {trace_id}

    ids = {s.span_id: s for s in spans}

    def parent(s: Span) -> Span:
        assert s.parent in ids, f"{s.name} of {s.service} has a parent that was not exported"
        return ids[s.parent]

    extract_pages = by_name["extract.page"]
    assert sorted(s.attrs["etl.page"] for s in extract_pages) == [0, 1, 2]
    assert all(parent(s) is root for s in extract_pages)
    # Each page's transform span is a child of the extract span of the same page.
    transforms = by_name["transform.page"]
    assert sorted(s.attrs["etl.page"] for s in transforms) == [0, 1, 2]
    for s in transforms:
        up = parent(s)
        assert (s.service, up.name, up.attrs["etl.page"]) == (
            "transformer",
            "extract.page",
            s.attrs["etl.page"],
        )
    assert parent(by_name["transform.end"][0]) is root
    for load in by_name["load.pages"]:
        assert load.service == "saver" and parent(load).name == "transform.page"
    for tx in by_name["sqlite.transaction"]:
        assert parent(tx).name == "load.pages"
    # Finishing joins the run's trace under the extraction's root span; files and upload under it.
    (finish,) = by_name["save.finish"]
    assert finish.attrs["etl.run_id"] == run_id and parent(finish) is root
    assert parent(by_name["files.write"][0]) is finish
    assert parent(by_name["sftp.upload"][0]) is finish

    # Every processed page's log line carries run id, trace id, page and outcome (JSON lines).
    page_lines = [line for line in _json_lines(done.stdout) if line.get("event") == "page handed on"]
    for name, event in (("transformer", "page transformed"), ("saver", "page loaded")):
        page_lines += [line for line in _json_lines(p.procs[name].output()) if line.get("event") == event]
    assert len(page_lines) == 9
    for line in page_lines:
        assert line["run_id"] == run_id and line["trace_id"] == trace_id
        assert line["page"] in (0, 1, 2) and line["outcome"] in ("ok", "loaded")


def _json_lines(text: str) -> list[dict]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            out.append(json.loads(line))
    return out
