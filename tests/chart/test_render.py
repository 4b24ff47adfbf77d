"""The chart renders and lints cleanly for every value set, and every object is valid Kubernetes."""

import kubernetes_validate
import pytest
import yaml

from testbed import chart
from tests.chart import k8s

KUBE_VERSIONS = ["1.29.0", kubernetes_validate.utils.latest_version()]
# Custom resources: not in Kubernetes' schemas (KEDA's are checked against its CRDs in test_keda.py).
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PrometheusRule"),
    ("keda.sh/v1alpha1", "ScaledObject"),
    ("keda.sh/v1alpha1", "TriggerAuthentication"),
}


@pytest.mark.parametrize("name", sorted(k8s.VALUE_SETS))
def test_lints_without_errors_or_warnings(name):
    report = chart.lint(k8s.VALUE_SETS[name])
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("version", KUBE_VERSIONS)
def test_every_object_validates_strictly_against_kubernetes_schemas(rendered, version):
    checked = 0
    for obj in rendered:
        if (obj["apiVersion"], obj["kind"]) in CRDS:
            continue
        # strict: the schemas forbid unknown fields, so a misspelt or misplaced key fails here.
        kubernetes_validate.validate(obj, version, strict=True)
        checked += 1
    assert checked >= 20


def test_schema_validation_catches_an_unknown_field():
    """The strict schemas are really strict: a field Kubernetes does not know fails."""
    dep = next(o for o in k8s.render_objects() if o["kind"] == "Deployment")
    k8s.pod_spec(dep)["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.utils.ValidationError):
        kubernetes_validate.validate(dep, KUBE_VERSIONS[0], strict=True)


def test_prometheus_operator_objects_have_the_fields_the_operator_requires():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    (sm,) = [o for o in objs if o["kind"] == "ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["spec"]["selector"]["matchLabels"] and sm["spec"]["endpoints"]
    assert sm["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    ports = {e["port"] for e in sm["spec"]["endpoints"]}
    # Every worker and API Service the monitor selects exposes one of the endpoint port names.
    services = [
        o for o in objs if o["kind"] == "Service" and k8s.component(o) in ("extractor", "transformer", "saver", "api")
    ]
    assert services and all(ports & {p["name"] for p in s["spec"]["ports"]} for s in services)
    expr = sm["spec"]["selector"]["matchExpressions"][0]
    for s in services:
        labels = s["metadata"]["labels"]
        assert all(labels[k] == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
        assert labels[expr["key"]] in expr["values"]

    (rule,) = [o for o in objs if o["kind"] == "PrometheusRule"]
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    shipped = yaml.safe_load((chart.CHART / "files" / "alert-rules.yml").read_text())["groups"]
    assert rule["spec"]["groups"] == shipped
    for group in rule["spec"]["groups"]:
        assert group["name"] and group["rules"]
        for r in group["rules"]:
            assert ("alert" in r) != ("record" in r) and isinstance(r["expr"], str) and r["expr"]


def test_dashboard_config_map_carries_the_sidecar_label_and_the_shipped_json():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    (cm,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = (chart.CHART / "files" / "grafana-dashboard.json").read_text()
    assert cm["data"]["etl-pipeline.json"].strip() == shipped.strip()


def test_monitoring_objects_only_when_asked():
    kinds = {o["kind"] for o in k8s.render_objects()}
    assert not kinds & {"ServiceMonitor", "PrometheusRule"}
    names = [o["metadata"]["name"] for o in k8s.render_objects() if o["kind"] == "ConfigMap"]
    assert not [n for n in names if n.endswith("-dashboard")]


def test_extractor_cronjob_runs_the_one_shot_command_daily_without_overlap():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    (cj,) = [o for o in objs if o["kind"] == "CronJob"]
    assert not [o for o in objs if o["kind"] == "Deployment" and k8s.component(o) == "extractor"]
    assert cj["spec"]["schedule"] == "30 2 * * *" and cj["spec"]["concurrencyPolicy"] == "Forbid"
    assert cj["spec"]["successfulJobsHistoryLimit"] >= 1 and cj["spec"]["failedJobsHistoryLimit"] >= 1
    assert cj["spec"]["jobTemplate"]["spec"]["backoffLimit"] >= 1
    (c,) = k8s.pod_spec(cj)["containers"]
    assert c["command"] == ["python", "-m", "extractor"] and c["args"][0] == "once"
    assert k8s.pod_spec(cj)["restartPolicy"] in ("Never", "OnFailure")


def test_transformer_autoscaler_targets_the_deployment():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    (hpa,) = [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]
    dep = k8s.by_component(objs, "Deployment", "transformer")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": dep["metadata"]["name"],
    }
    assert "replicas" not in dep["spec"]  # the HPA owns the count
    assert k8s.by_component(k8s.render_objects(), "Deployment", "transformer")["spec"]["replicas"] == 2


def test_ingress_routes_the_configured_host_paths_and_tls_to_the_api_service():
    objs = k8s.render_objects(k8s.VALUE_SETS["external-values"])
    (ing,) = [o for o in objs if o["kind"] == "Ingress"]
    svc = k8s.by_component(objs, "Service", "api")
    assert ing["spec"]["ingressClassName"] == "nginx"
    assert ing["spec"]["tls"] == [{"hosts": ["etl.example.com"], "secretName": "etl-api-tls"}]
    (rule,) = ing["spec"]["rules"]
    assert rule["host"] == "etl.example.com"
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == svc["metadata"]["name"] and backend["port"]["name"] == svc["spec"]["ports"][0]["name"]


def test_notes_tell_the_next_commands():
    notes = next(t for p, t in chart.render(k8s.VALUE_SETS["kind-values"]).items() if p.endswith("NOTES.txt"))
    assert "helm test etl --namespace etl" in notes and "http://localhost/etl_runs" in notes
    assert "get secret etl-secrets" in notes
    default_notes = next(t for p, t in chart.render({}).items() if p.endswith("NOTES.txt"))
    assert "nothing is uploaded" in default_notes and "port-forward svc/etl-api" in default_notes


def test_every_helper_is_namespaced_and_has_a_one_line_comment():
    for tpl in (chart.CHART / "templates").rglob("*.tpl"):
        lines = tpl.read_text().splitlines()
        for i, line in enumerate(lines):
            if '{{- define "' in line or '{{ define "' in line:
                name = line.split('"')[1]
                assert name.startswith("etl."), f"{tpl.name}: {name}"
                above = lines[i - 1].strip()
                assert above.startswith("{{/*") and above.endswith("*/}}"), f"{tpl.name}: {name}"


def test_every_etl_variable_the_chart_sets_is_a_setting_of_the_service():
    """A misspelt variable would be ignored silently by pydantic-settings (extra="ignore")."""
    from api.settings import ApiSettings
    from extractor.settings import ExtractorSettings
    from saver.settings import SaverSettings
    from transformer.settings import TransformerSettings

    known = {
        cls: {f"ETL_{name.upper()}" for name in cls.model_fields}
        for cls in (ExtractorSettings, TransformerSettings, SaverSettings, ApiSettings)
    }
    by_component = dict(zip(["extractor", "transformer", "saver", "api"], known.values(), strict=True))
    # Set only to build ETL_REDIS_URL by $(VAR) expansion inside the pod.
    internal = {"ETL_REDIS_PASSWORD"}
    for name in k8s.VALUE_SETS:
        objs = k8s.render_objects(k8s.VALUE_SETS[name])
        (config,) = [o for o in objs if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-config")]
        shared = {k for k in config["data"] if k.startswith("ETL_")}
        assert shared <= set.intersection(*known.values())
        for w, c in k8s.containers(objs):
            if k8s.component(w) not in by_component:
                continue
            names = {e["name"] for e in c.get("env", []) if e["name"].startswith("ETL_")} - internal
            assert names <= by_component[k8s.component(w)], (
                w["metadata"]["name"],
                names - by_component[k8s.component(w)],
            )
