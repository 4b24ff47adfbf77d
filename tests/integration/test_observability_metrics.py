"""Every service's /metrics after a real run: counters equal the database's counts, histograms observed."""

import time
import uuid

import httpx
import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

import testbed as tb
from etl_common.keys import Keys
from etl_common.streamstats import StreamCollector
from tests.unit.test_dashboard import queried_metrics, sample_names


class Scrape:
    """One parsed exposition: series (name, labels) -> value, plus the family names and types."""

    def __init__(self, text: str) -> None:
        self.series: dict[tuple[str, frozenset], float] = {}
        self.names: set[str] = set()
        for family in text_string_to_metric_families(text):
            self.names |= sample_names(family.name, family.type)
            for s in family.samples:
                self.series[(s.name, frozenset(s.labels.items()))] = s.value

    def get(self, name: str, **labels: str) -> float:
        return self.series.get((name, frozenset(labels.items())), 0.0)

    def total(self, name: str, **labels: str) -> float:
        """Sum over the series of ``name`` whose labels include ``labels``."""
        want = set(labels.items())
        return sum(v for (n, ls_), v in self.series.items() if n == name and want <= ls_)


def scrape(port: int) -> Scrape:
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    return Scrape(resp.text)


def wait_for(check, timeout_s: float = 20.0):
    deadline = time.monotonic() + timeout_s
    while True:
        result = check()
        if result or time.monotonic() > deadline:
            return result
        time.sleep(0.1)


def test_every_service_exports_counts_that_match_the_database(make_source, make_pipeline):
    source = make_source(count=250, bad_every=10)
    # One 503 on the second page: one retry, and the request counter by status shows it.
    source.faults([{"skip": 100, "status": 503, "times": 1}])
    p = make_pipeline(source)
    ports = p.start_observed()
    run = p.wait_run(("succeeded",))
    run_id = run["run_id"]
    for name, port in ports.items():
        tb.wait_port(port, proc=p.procs[name].popen)

    # The saver sets its gauges just after the status change the test waits for.
    saver = wait_for(lambda: (s := scrape(ports["saver"])).get("etl_last_run_duration_seconds") > 0 and s)
    assert saver, "etl_last_run_duration_seconds never set"
    extractor, transformer = scrape(ports["extractor"]), scrape(ports["transformer"])

    raw, valid = p.count("raw_users", run_id), p.count("processed_users", run_id)
    invalid = p.count("invalid_users", run_id)
    with p.db() as db:
        pages = db.execute("SELECT count(*) FROM loaded_pages WHERE run_id=?", (run_id,)).fetchone()[0]
        uploaded_bytes = db.execute("SELECT sum(bytes) FROM uploaded_files WHERE run_id=?", (run_id,)).fetchone()[0]
    assert (raw, valid, invalid, pages) == (250, 225, 25, 3)

    # Extractor: fetched = raw rows; the source's 503 and its retry; page and stage histograms.
    assert extractor.get("etl_records_total", stage="extract", outcome="fetched") == raw
    assert extractor.get("etl_pages_total", stage="extract", outcome="fetched") == pages
    assert extractor.get("etl_source_requests_total", status="200") == 3
    assert extractor.get("etl_source_requests_total", status="503") == 1
    assert extractor.get("etl_source_retries_total") == 1
    assert extractor.get("etl_page_duration_seconds_count", stage="extract") == pages
    assert extractor.get("etl_stage_duration_seconds_count", stage="extract") == 1
    assert extractor.get("etl_runs_total", stage="extract", outcome="succeeded") == 1
    assert extractor.get("etl_run_expected_records") == 250
    assert extractor.get("etl_run_progress_records", stage="extract") == 250
    assert extractor.get("etl_last_run_start_timestamp_seconds") > 0

    # Transformer: valid and invalid equal the two tables.
    assert transformer.get("etl_records_total", stage="transform", outcome="valid") == valid
    assert transformer.get("etl_records_total", stage="transform", outcome="invalid") == invalid
    assert transformer.get("etl_pages_total", stage="transform", outcome="ok") == pages
    assert transformer.get("etl_page_duration_seconds_count", stage="transform") == pages
    assert transformer.get("etl_page_duration_seconds_sum", stage="transform") > 0

    # Saver: loaded = rows in processed_users; files uploaded with their bytes; run duration.
    assert saver.get("etl_records_total", stage="load", outcome="loaded") == valid
    assert saver.get("etl_records_total", stage="load", outcome="invalid") == invalid
    assert saver.get("etl_records_total", stage="upload", outcome="uploaded") == valid
    assert saver.get("etl_pages_total", stage="load", outcome="loaded") == pages
    assert saver.get("etl_page_duration_seconds_count", stage="load") == pages
    assert saver.get("etl_sftp_uploads_total", outcome="succeeded") == 1
    assert saver.get("etl_sftp_uploaded_bytes_total") == uploaded_bytes > 0
    assert saver.get("etl_runs_total", stage="save", outcome="succeeded") == 1
    assert saver.get("etl_stage_duration_seconds_count", stage="run") == 1
    assert saver.get("etl_run_progress_records", stage="load") == raw
    assert abs(saver.get("etl_last_success_timestamp_seconds") - time.time()) < 60
    assert 0 < saver.get("etl_last_run_duration_seconds") < 60
    # The quality report's invalid share, for the dashboard and the EtlInvalidRateHigh alert (the report
    # comes from a child process, shortly after the run succeeded).
    saver = wait_for(
        lambda: (s := scrape(ports["saver"])).get("etl_stage_duration_seconds_count", stage="quality") and s
    )
    assert saver, "the quality report was never stored"
    assert saver.get("etl_last_run_invalid_ratio") == invalid / raw
    assert saver.get("etl_stage_duration_seconds_count", stage="quality") == 1

    # Streams, read from Redis at scrape time: everything consumed, nothing pending, no dead letters.
    for s in (extractor, transformer, saver):
        assert s.get("etl_redis_up") == 1
    assert transformer.get("etl_stream_length_entries", stream="raw") == 0
    assert transformer.get("etl_stream_pending_entries", stream="raw", group="transformer") == 0
    assert transformer.get("etl_stream_consumers", stream="raw", group="transformer") >= 1
    assert saver.get("etl_stream_length_entries", stream="processed") == 0
    assert saver.get("etl_stream_pending_entries", stream="processed", group="saver") == 0
    assert saver.get("etl_stream_lag_entries", stream="events", group="saver") == 0
    assert saver.get("etl_stream_length_entries", stream="dead") == 0
    assert ("etl_stream_dead_lettered_total", frozenset({("group", "saver")})) in saver.series
    assert extractor.get("etl_stream_length_entries", stream="raw") == 0

    # API: requests labelled by route template and status, with latency observed.
    api = f"http://127.0.0.1:{ports['api']}"
    auth = {"Authorization": "Bearer test-token"}
    assert httpx.get(f"{api}/etl_runs", headers=auth).status_code == 200
    assert httpx.get(f"{api}/etl_runs").status_code == 401
    assert httpx.get(f"{api}/no/such/path/42").status_code == 404
    assert httpx.get(f"{api}/etl_runs/{run_id}", headers=auth).status_code == 200
    api_scrape = scrape(ports["api"])
    routes = {dict(labels).get("route") for name, labels in api_scrape.series if name == "etl_api_requests_total"}
    # The one-run route is labelled by its template, never by the run id in the path.
    assert any(r.startswith("/etl_runs/{") for r in routes), routes
    assert not any(run_id in r for r in routes), routes
    assert api_scrape.get("etl_api_requests_total", method="GET", route="/etl_runs", status="200") == 1
    assert api_scrape.get("etl_api_requests_total", method="GET", route="/etl_runs", status="401") == 1
    assert api_scrape.get("etl_api_requests_total", method="GET", route="<unmatched>", status="404") == 1
    assert api_scrape.get("etl_api_request_duration_seconds_count", method="GET", route="/etl_runs") == 2
    assert not any("/no/such" in dict(labels).get("route", "") for _, labels in api_scrape.series)

    # Every metric the dashboard and the alert rules query is exported by some service.
    exported = set().union(*(s.names for s in (extractor, transformer, saver, api_scrape)))
    missing = {name: where for name, where in queried_metrics().items() if name not in exported}
    assert not missing, f"queried but not exported by any service: {missing}"


class TestStreamCollector:
    """The scrape-time stream figures, against a real Redis."""

    def test_reads_length_pending_lag_and_oldest_age(self, redis_server):
        keys = Keys(f"t{uuid.uuid4().hex[:10]}:")
        client = redis.Redis.from_url(redis_server.url)
        client.xgroup_create(keys.raw_stream, "transformer", id="0", mkstream=True)
        for i in range(5):
            client.xadd(keys.raw_stream, {"data": str(i)})
        client.xreadgroup("transformer", "c1", {keys.raw_stream: ">"}, count=2)
        client.xadd(keys.dead_stream, {"reason": "test"})
        registry = CollectorRegistry()
        collector = StreamCollector(redis_server.url, keys)
        collector.watch("transformer", [keys.raw_stream])
        registry.register(collector)
        s = Scrape(generate_latest(registry).decode())
        raw = {"stream": "raw", "group": "transformer"}
        assert s.get("etl_redis_up") == 1
        assert s.get("etl_stream_length_entries", stream="raw") == 5
        assert s.get("etl_stream_length_entries", stream="dead") == 1
        assert s.get("etl_stream_pending_entries", **raw) == 2
        assert s.get("etl_stream_lag_entries", **raw) == 3
        assert s.get("etl_stream_consumers", **raw) == 1
        assert 0 <= s.get("etl_stream_oldest_pending_age_seconds", **raw) < 60
        client.xack(keys.raw_stream, "transformer", *[i for i, _ in client.xrange(keys.raw_stream, count=2)])
        after = Scrape(generate_latest(registry).decode())
        assert after.get("etl_stream_pending_entries", **raw) == 0
        assert after.get("etl_stream_oldest_pending_age_seconds", **raw) == 0

    def test_answers_quickly_when_redis_is_down(self):
        registry = CollectorRegistry()
        collector = StreamCollector(f"redis://127.0.0.1:{tb.free_port()}/0", Keys())
        collector.watch("saver", ["etl:stream:processed"])
        registry.register(collector)
        started = time.monotonic()
        s = Scrape(generate_latest(registry).decode())
        assert s.get("etl_redis_up") == 0 and time.monotonic() - started < 5
        assert not [name for name, _ in s.series if name.startswith("etl_stream_")]
