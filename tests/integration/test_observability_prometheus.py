"""A real Prometheus scrapes a real run: every dashboard query evaluates, every alert rule is healthy."""

import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

import testbed as tb
from tests.unit.test_dashboard import ALERTS, dashboard_exprs

PROMETHEUS = tb.which("prometheus")
PROMTOOL = tb.which("promtool")
RULE_TESTS = Path(__file__).resolve().parents[2] / "observability" / "prometheus" / "alert-rules.test.yml"

# Panels that only show something after a failure: an empty answer is right for a clean run.
EMPTY_WHEN_HEALTHY = {"Unexpected errors by stage"}

needs_prometheus = pytest.mark.skipif(
    PROMETHEUS is None or PROMTOOL is None,
    reason="Prometheus is not installed (apt-get install prometheus; .ci/run installs it)",
)


@needs_prometheus
def test_alert_rules_fire_when_they_should():
    """promtool's rule unit tests: synthetic series in, the expected alerts out."""
    done = subprocess.run([PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


@needs_prometheus
def test_dashboard_queries_answer_from_a_real_prometheus(make_source, make_pipeline, tmp_path):
    source = make_source(count=250, bad_every=10)
    p = make_pipeline(source)
    ports = p.start_observed()
    run = p.wait_run(("succeeded",))
    tb.wait_for_quality(p.db_path, run["run_id"])  # the invalid-share gauge the alert reads is set with the report
    tb.wait_port(ports["api"], proc=p.procs["api"].popen)
    for path in ("/etl_runs", "/healthz", "/no/such/route"):
        httpx.get(f"http://127.0.0.1:{ports['api']}{path}", headers={"Authorization": "Bearer test-token"})

    rules = tmp_path / "alert-rules.yml"
    shutil.copy(ALERTS, rules)
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(rules)],
        "scrape_configs": [
            {"job_name": name, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]} for name, port in ports.items()
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    prom_port = tb.free_port()
    prom = tb.spawn(
        "prometheus",
        [
            PROMETHEUS,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        tmp_path,
    )
    try:
        tb.wait_port(prom_port, proc=prom.popen)
        api = f"http://127.0.0.1:{prom_port}/api/v1"

        def query(expr: str) -> dict:
            return httpx.get(f"{api}/query", params={"query": expr}, timeout=10).json()

        # Every target up and a few scrapes in, so rate() has points to work with.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            up = query("sum(up)")
            if up["status"] == "success" and up["data"]["result"] and up["data"]["result"][0]["value"][1] == "4":
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"targets not up: {httpx.get(f'{api}/targets').text[:2000]}")
        time.sleep(5)

        empty = set()
        for title, expr in dashboard_exprs():
            answer = query(expr.replace("1m]", "10s]"))
            assert answer["status"] == "success", (title, expr, answer)
            if not answer["data"]["result"]:
                empty.add(title)
        assert empty <= EMPTY_WHEN_HEALTHY, f"panels without data after a run: {empty - EMPTY_WHEN_HEALTHY}"

        groups = httpx.get(f"{api}/rules", timeout=10).json()["data"]["groups"]
        evaluated = [r for g in groups for r in g["rules"]]
        assert len(evaluated) == len([r for g in yaml.safe_load(rules.read_text())["groups"] for r in g["rules"]])
        for r in evaluated:
            assert r["health"] in ("ok", "unknown"), (r["name"], r.get("lastError"))
        # The run is sound except that one record in ten is broken (bad_every=10): above the 5% threshold.
        assert [r["name"] for r in evaluated if r["state"] in ("firing", "pending")] == ["EtlInvalidRateHigh"]
    finally:
        prom.stop()
