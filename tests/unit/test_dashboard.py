"""The Grafana dashboard and the Prometheus alert rules: valid files, PromQL that parses, metrics that exist."""

import json
import re
from pathlib import Path

import promql_parser
import pytest
import yaml

from etl_common import metrics, streamstats

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "etl" / "files" / "grafana-dashboard.json"
ALERTS = ROOT / "charts" / "etl" / "files" / "alert-rules.yml"
OBSERVABILITY = ROOT / "observability"

# Grafana's built-in variables, replaced by what Grafana would put there, so PromQL can parse.
GRAFANA_VARS = {"$__rate_interval": "1m", "$__interval": "30s", "$__range": "1h"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, PromQL) of every query of the dashboard, Grafana variables substituted."""
    out = []
    for panel in dashboard()["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for var, value in GRAFANA_VARS.items():
                expr = expr.replace(var, value)
            out.append((panel["title"], expr))
    return out


def alert_rules() -> list[dict]:
    return [rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]]


def selectors(node) -> set[str]:
    """Metric names selected anywhere in a parsed PromQL expression."""
    names: set[str] = set()
    if isinstance(node, promql_parser.VectorSelector):
        if node.name:
            names.add(node.name)
        return names
    if isinstance(node, promql_parser.MatrixSelector):
        return selectors(node.vector_selector)
    for attr in ("expr", "lhs", "rhs", "param"):
        child = getattr(node, attr, None)
        if child is not None and not isinstance(child, (str, int, float)):
            names |= selectors(child)
    for arg in getattr(node, "args", None) or []:
        names |= selectors(arg)
    return names


def queried_metrics() -> dict[str, set[str]]:
    """Metric name -> where it is used (panel titles and alert names)."""
    used: dict[str, set[str]] = {}
    sources = dashboard_exprs() + [(r["alert"], r["expr"]) for r in alert_rules()]
    for where, expr in sources:
        for name in selectors(promql_parser.parse(expr)):
            used.setdefault(name, set()).add(where)
    return used


def sample_names(family_name: str, kind: str) -> set[str]:
    """The series names one metric family exposes."""
    suffixes = {
        "counter": ("_total", "_created"),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
    }
    if kind in suffixes:
        return {family_name + s for s in suffixes[kind]}
    return {family_name}


def defined_series() -> set[str]:
    """Every series name the services' code defines: etl_common.metrics plus the stream collector."""
    names: set[str] = set()
    for metric in metrics.OWNERS:
        for family in metric.collect():
            names |= sample_names(family.name, family.type)
    return names | set(streamstats.NAMES)


class TestDashboard:
    """charts/etl/files/grafana-dashboard.json, the one copy the chart and compose both use."""

    def test_is_a_dashboard_with_unique_panel_ids(self):
        d = dashboard()
        assert d["uid"] and d["title"] and d["schemaVersion"] >= 36
        ids = [p["id"] for p in d["panels"]]
        assert len(ids) == len(set(ids))

    def test_panels_do_not_overlap_and_fit_the_grid(self):
        taken: set[tuple[int, int]] = set()
        for p in dashboard()["panels"]:
            g = p["gridPos"]
            assert 0 <= g["x"] and g["x"] + g["w"] <= 24, p["title"]
            cells = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
            assert not cells & taken, f"panel {p['title']!r} overlaps another"
            taken |= cells

    def test_every_query_uses_the_datasource_variable(self):
        d = dashboard()
        assert any(v["name"] == "datasource" and v["type"] == "datasource" for v in d["templating"]["list"])
        for p in d["panels"]:
            if p["type"] != "row":
                assert p["datasource"]["uid"] == "${datasource}", p["title"]
                assert p["targets"], f"panel {p['title']!r} has no query"

    @pytest.mark.parametrize("title,expr", dashboard_exprs())
    def test_query_parses(self, title, expr):
        promql_parser.parse(expr)

    def test_covers_what_operators_asked_for(self):
        used = queried_metrics()
        for name in (
            "etl_last_success_timestamp_seconds",
            "etl_last_run_duration_seconds",
            "etl_records_total",
            "etl_stream_length_entries",
            "etl_stream_pending_entries",
            "etl_stream_dead_lettered_total",
            "etl_source_requests_total",
            "etl_source_retries_total",
            "etl_sftp_uploads_total",
            "etl_api_requests_total",
            "etl_api_request_duration_seconds_bucket",
            "etl_last_run_invalid_ratio",
        ):
            assert name in used, f"the dashboard does not show {name}"


class TestAlertRules:
    """charts/etl/files/alert-rules.yml in Prometheus' rules-file format."""

    def test_rules_are_complete(self):
        rules = alert_rules()
        names = {r["alert"] for r in rules}
        assert {
            "EtlNoSuccessfulRun",
            "EtlBacklogGrowing",
            "EtlDeadLetters",
            "EtlApiErrorRatio",
            "EtlInvalidRateHigh",
        } <= names
        assert len(names) == len(rules)
        for r in rules:
            assert set(r) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}, r["alert"]
            assert r["labels"]["severity"] in ("warning", "critical")
            assert r["annotations"]["summary"]
            if "for" in r:
                assert re.fullmatch(r"\d+[smhd]", r["for"]), r["alert"]

    @pytest.mark.parametrize("rule", alert_rules(), ids=lambda r: r["alert"])
    def test_expression_parses(self, rule):
        promql_parser.parse(rule["expr"])

    def test_no_successful_run_threshold_is_26_hours(self):
        (rule,) = [r for r in alert_rules() if r["alert"] == "EtlNoSuccessfulRun"]
        assert "26 * 3600" in rule["expr"]

    def test_a_broken_expression_is_caught(self):
        """The parser really checks: the test above can fail."""
        with pytest.raises(ValueError):
            promql_parser.parse('sum(rate(etl_records_total{stage="load"}[5m])')


def test_every_queried_metric_is_defined_by_the_services():
    defined = defined_series()
    missing = {name: where for name, where in queried_metrics().items() if name not in defined}
    assert not missing, f"queries name metrics no service defines: {missing}"


class TestComposeFiles:
    """observability/: Prometheus and Grafana provisioning for the compose profile."""

    def test_prometheus_scrapes_every_service_and_loads_the_rules(self):
        cfg = yaml.safe_load((OBSERVABILITY / "prometheus" / "prometheus.yml").read_text())
        targets = {t for job in cfg["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]}
        assert targets == {"extractor:9100", "transformer:9100", "saver:9100", "api:8000"}
        assert cfg["rule_files"] == ["/etc/prometheus/rules/alert-rules.yml"]

    def test_grafana_provisioning(self):
        prov = OBSERVABILITY / "grafana" / "provisioning"
        ds = yaml.safe_load((prov / "datasources" / "prometheus.yml").read_text())
        assert ds["datasources"][0]["type"] == "prometheus"
        dash = yaml.safe_load((prov / "dashboards" / "etl.yml").read_text())
        assert dash["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
