"""The alert rules against what the services really export: promtool rule tests fed with real scrapes.

The four services run as real processes; their /metrics are scraped after a run, with the saver stopped,
after the saver restarted and after a failed run. Each scrape becomes promtool input series (timestamps
moved onto promtool's clock), and each scenario says which alerts fire and which stay quiet.
"""

import json
import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

import testbed as tb
from dummyjson.server import Source
from etl_common import metrics, streamstats
from tests.support import Pipeline, SourceServer
from tests.unit.test_dashboard import ALERTS, alert_rules

PROMTOOL = tb.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed (apt-get install prometheus)")

# Values that are Unix times: moved onto promtool's clock, which starts at 0.
TIMESTAMPS = ("_timestamp_seconds", "_created", "_start_time_seconds")
STEP_S = 60


@dataclass
class Scrape:
    """One real scrape of a service: its families and its samples (name, labels) -> value."""

    service: str
    at: float
    families: set[str]
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float]

    def value(self, name: str, **labels: str) -> float | None:
        return self.samples.get((name, tuple(sorted(labels.items()))))


def scrape(service: str, port: int) -> Scrape:
    """GET /metrics of a live service, parsed."""
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5)
    resp.raise_for_status()
    families, samples = set(), {}
    for family in text_string_to_metric_families(resp.text):
        families.add(family.name)
        for s in family.samples:
            samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return Scrape(service, time.time(), families, samples)


def scrape_fails(port: int) -> bool:
    try:
        httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2)
    except httpx.TransportError:
        return True
    return False


# A service's timeline: (minutes, scrape) segments; None = its target is down (no samples).
Timeline = list[tuple[int, Scrape | None]]


def _number(v: float) -> str:
    return repr(float(v)) if v == v else "NaN"


def input_series(timelines: dict[str, Timeline], epoch0: int) -> list[dict[str, str]]:
    """promtool input_series, one sample a minute, labelled as the compose Prometheus labels its targets."""
    out = []
    for service, segments in timelines.items():
        keys = sorted({k for _, sc in segments if sc for k in sc.samples})
        job = "etl-api" if service == "api" else "etl-workers"
        target = {"job": job, "instance": f"{service}:9100", "component": service}
        for name, labels in keys:
            tokens: list[str] = []
            live = False
            for minutes, sc in segments:
                v = sc.samples.get((name, labels)) if sc else None
                if v is None:
                    n = minutes
                    if live:  # what Prometheus writes when a series or its target goes away
                        tokens.append("stale")
                        n -= 1
                    tokens += ["_"] * n
                    live = False
                    continue
                if v and name.endswith(TIMESTAMPS):
                    v = int(v) - epoch0  # whole seconds, never past the scrape
                tokens.append(f"{_number(v)}x{minutes - 1}")
                live = True
            text = ",".join(f"{k}={json.dumps(val)}" for k, val in (*labels, *target.items()))
            out.append({"series": f"{name}{{{text}}}", "values": " ".join(tokens)})
    return out


def rule(alert: str) -> dict:
    (r,) = [r for r in alert_rules() if r["alert"] == alert]
    return r


def humanize_duration(seconds: float) -> str:
    """Prometheus' humanizeDuration for durations of a day or more."""
    s = int(seconds)
    return f"{s // 86400}d {s % 86400 // 3600}h {s % 3600 // 60}m {s % 60}s"


def firing(alert: str, value: str = "", **labels: str) -> dict:
    """An expected alert: the rule's labels plus ``labels``, its annotations rendered with them."""
    r = rule(alert)

    def render(text: str) -> str:
        text = re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels[m.group(1)], text)
        return text.replace("{{ $value | humanizeDuration }}", value)

    return {
        "exp_labels": {**r["labels"], **labels},
        "exp_annotations": {k: render(v) for k, v in r["annotations"].items()},
    }


def expect(quiet_at: list[str], firing_at: dict[str, dict[str, list[dict]]] | None = None) -> list[dict]:
    """Every alert quiet at the times ``quiet_at``, except those ``firing_at`` lists (time -> alert -> alerts)."""
    firing_at = firing_at or {}
    tests = []
    for at in sorted(set(quiet_at) | set(firing_at)):
        for r in alert_rules():
            tests.append(
                {"eval_time": at, "alertname": r["alert"], "exp_alerts": firing_at.get(at, {}).get(r["alert"], [])}
            )
    return tests


def check_rules(tmp_path: Path, name: str, series: list[dict[str, str]], alert_tests: list[dict]) -> None:
    """``promtool test rules`` of the shipped rules on ``series``: every expectation of ``alert_tests`` holds."""
    (tmp_path / "rules.yml").write_text(Path(ALERTS).read_text())
    test = {"name": name, "interval": f"{STEP_S}s", "input_series": series, "alert_rule_test": alert_tests}
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [test]}
    (tmp_path / "scraped.test.yml").write_text(yaml.safe_dump(doc, sort_keys=False, width=1000))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", "scraped.test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=170
    )
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-3000:]


@pytest.fixture(scope="module")
def scrapes(tmp_path_factory, redis_server, sftp_server):
    """A run of the four services, then the saver stopped and restarted, then a failed run: the scrapes."""
    tmp = tmp_path_factory.mktemp("alerts")
    source = SourceServer(Source(120, 0, 0, None)).start()
    upload = tmp / "upload"
    upload.mkdir()
    env = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(upload)}
    # A failed extraction waits an hour before it resumes: the test reads the failure, not the resume.
    p = Pipeline(tmp / "p", redis_server.url, env, source.url, {"ETL_RESUME_DELAY_S": "3600"})
    try:
        ports = p.start_observed()
        run = p.wait_run(("succeeded",))
        tb.wait_for_quality(p.db_path, run["run_id"])
        for name, port in ports.items():
            tb.wait_port(port, proc=p.procs[name].popen)
        got: dict[str, Scrape | dict[str, Scrape]] = {}
        got["run"] = {name: scrape(name, port) for name, port in ports.items()}

        p.procs["saver"].stop()
        assert scrape_fails(ports["saver"])
        p.start("saver", ETL_OPS_PORT=str(ports["saver"]), ETL_OPS_HOST="127.0.0.1")
        tb.wait_port(ports["saver"], proc=p.procs["saver"].popen)
        got["saver_restarted"] = scrape("saver", ports["saver"])

        source.faults([{"status": 503, "times": -1}])
        resp = httpx.post(
            f"http://127.0.0.1:{ports['api']}/etl_runs", headers={"Authorization": "Bearer test-token"}, timeout=5
        )
        assert resp.status_code == 202, resp.text
        p.wait_run(("failed",), timeout_s=60)
        got["extractor_failed"] = scrape("extractor", ports["extractor"])
        yield got
    finally:
        p.stop_all()
        source.stop()


@needs_promtool
def test_each_service_exports_only_the_families_it_owns(scrapes):
    for service, sc in scrapes["run"].items():
        # The text format shows a counter's or histogram's _created series as a family of its own.
        etl = {f for f in sc.families if f.startswith("etl_") and not f.endswith("_created")}
        owned = {f for m in metrics.owned_by(service) for f in (fam.name for fam in m.collect())}
        stream_families = set(streamstats.NAMES) if service in metrics.WORKERS else set()
        assert etl == owned | stream_families, service
    assert "etl_last_success_timestamp_seconds" not in scrapes["run"]["api"].families
    assert scrapes["run"]["saver"].value("etl_last_success_timestamp_seconds") > 0


def _timeline(scrapes, minutes: int, **changes: Timeline) -> dict[str, Timeline]:
    """Each service's scrape after the run for ``minutes``, unless ``changes`` gives its timeline."""
    return {name: changes.get(name, [(minutes, sc)]) for name, sc in scrapes["run"].items()}


def _epoch0(scrapes) -> int:
    """The first scrape's second is promtool's 1h (at 0, a last success would read as "none yet")."""
    return int(min(sc.at for sc in scrapes["run"].values())) - 3600


@needs_promtool
def test_after_a_run_all_is_quiet_and_26_hours_later_no_success_pages(scrapes, tmp_path):
    epoch0 = _epoch0(scrapes)
    series = input_series(_timeline(scrapes, 29 * 60), epoch0)
    success = int(scrapes["run"]["saver"].value("etl_last_success_timestamp_seconds")) - epoch0
    assert 3000 < success <= 3600
    late = firing("EtlNoSuccessfulRun", humanize_duration(28 * 3600 - success))
    check_rules(
        tmp_path, "after a real run", series, expect(["5m", "1h", "26h"], {"28h": {"EtlNoSuccessfulRun": [late]}})
    )


@needs_promtool
def test_saver_gone_is_reported_as_absent_and_never_as_a_success_in_1970(scrapes, tmp_path):
    run = scrapes["run"]
    epoch0 = _epoch0(scrapes)
    # The saver is scraped for 30 minutes, then its target is down for a day and more.
    series = input_series(_timeline(scrapes, 28 * 60, saver=[(30, run["saver"]), (28 * 60 - 30, None)]), epoch0)
    absent = firing("EtlSaverMetricsAbsent")
    check_rules(
        tmp_path,
        "the saver is gone",
        series,
        expect(["20m", "40m"], {"1h": {"EtlSaverMetricsAbsent": [absent]}, "27h": {"EtlSaverMetricsAbsent": [absent]}}),
    )


@needs_promtool
def test_saver_restarted_resets_its_counters_and_fires_nothing(scrapes, tmp_path):
    run, after = scrapes["run"]["saver"], scrapes["saver_restarted"]
    # The restart is real: a counter went back to 0, the last success came back from the database.
    assert run.value("etl_sftp_uploaded_bytes_total") > 0
    assert after.value("etl_sftp_uploaded_bytes_total") == 0
    # The gauge came back from the database (finished_at, written just before the live gauge was set).
    assert after.value("etl_last_success_timestamp_seconds") == pytest.approx(
        run.value("etl_last_success_timestamp_seconds"), abs=1.0
    )
    series = input_series(
        _timeline(scrapes, 3 * 60, saver=[(30, run), (1, None), (3 * 60 - 31, after)]), _epoch0(scrapes)
    )
    check_rules(tmp_path, "the saver restarted", series, expect(["29m", "31m", "35m", "1h", "2h"]))


@needs_promtool
def test_a_failed_run_fires_even_as_the_first_failure_of_the_extractor(scrapes, tmp_path):
    run, failed = scrapes["run"]["extractor"], scrapes["extractor_failed"]
    assert failed.value("etl_runs_total", stage="extract", outcome="failed") == 1
    series = input_series(_timeline(scrapes, 3 * 60, extractor=[(30, run), (3 * 60 - 30, failed)]), _epoch0(scrapes))
    alert = firing("EtlRunFailed", stage="extract", outcome="failed")
    check_rules(
        tmp_path,
        "a run failed",
        series,
        expect(["25m", "2h"], {"35m": {"EtlRunFailed": [alert]}, "1h": {"EtlRunFailed": [alert]}}),
    )
