"""KEDA: ScaledObjects for the transformers and (on PostgreSQL) the savers on their consumer groups' lag and pending
entries, valid against KEDA's own CRD schemas (tests/chart/fixtures), and Redis open to the KEDA operator."""

import copy
from pathlib import Path
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from etl_common.keys import GROUP_SAVER, GROUP_TRANSFORMER, Keys
from testbed import chart
from tests.chart import k8s

FIXTURES = Path(__file__).with_name("fixtures")
KEDA = {"keda": {"enabled": True}}
PG = {"database": {"engine": "postgresql", "existingSecret": "db-app"}}


def _strict(schema: Any) -> Any:
    """The CRD's schema with unknown fields refused, as `kubectl apply --validate=strict` does for a structural
    schema (fields marked x-kubernetes-preserve-unknown-fields stay open)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def _crd_validator(file: str) -> tuple[str, str, jsonschema.Draft7Validator]:
    crd = yaml.safe_load((FIXTURES / file).read_text())
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    # metadata is the API server's ObjectMeta, not described by the CRD.
    schema["properties"]["metadata"] = {"type": "object"}
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return api_version, crd["spec"]["names"]["kind"], jsonschema.Draft7Validator(schema)


VALIDATORS = {
    (api, kind): v
    for api, kind, v in (
        _crd_validator("keda.sh_scaledobjects.yaml"),
        _crd_validator("keda.sh_triggerauthentications.yaml"),
    )
}


def _keda_objects(objs: list[dict]) -> list[dict]:
    return [o for o in objs if o["apiVersion"].startswith("keda.sh/")]


@pytest.mark.parametrize("values", [KEDA, chart._merge(KEDA, PG), k8s.VALUE_SETS["postgresql-values"]])
def test_keda_objects_validate_against_keda_s_crd_schemas(values):
    found = _keda_objects(k8s.render_objects(values))
    assert {o["kind"] for o in found} == {"ScaledObject", "TriggerAuthentication"}
    for obj in found:
        VALIDATORS[(obj["apiVersion"], obj["kind"])].validate(obj)


def test_the_crd_validation_refuses_a_misspelt_field_and_a_missing_trigger():
    (so, *_) = [o for o in _keda_objects(k8s.render_objects(KEDA)) if o["kind"] == "ScaledObject"]
    validator = VALIDATORS[("keda.sh/v1alpha1", "ScaledObject")]
    bad = copy.deepcopy(so)
    bad["spec"]["minReplicas"] = 1  # the field is minReplicaCount
    assert list(validator.iter_errors(bad))
    bad = copy.deepcopy(so)
    del bad["spec"]["triggers"]
    assert list(validator.iter_errors(bad))


def _scaled(objs: list[dict]) -> dict[str, dict]:
    return {k8s.component(o): o for o in objs if o["kind"] == "ScaledObject"}


def test_triggers_follow_the_streams_and_groups_the_services_use():
    values = chart._merge(
        chart._merge(KEDA, PG), {"config": {"keyPrefix": "acme:"}, "keda": {"saver": {"lagCount": 7}}}
    )
    objs = k8s.render_objects(values)
    (auth,) = [o for o in objs if o["kind"] == "TriggerAuthentication"]
    keys = Keys("acme:")
    expected = {"transformer": (keys.raw_stream, GROUP_TRANSFORMER), "saver": (keys.processed_stream, GROUP_SAVER)}
    scaled = _scaled(objs)
    assert set(scaled) == set(expected)
    (redis_service,) = [
        o["metadata"]["name"]
        for o in objs
        if o["kind"] == "Service" and k8s.component(o) == "redis" and o["spec"].get("clusterIP") != "None"
    ]
    for name, so in scaled.items():
        deployment = k8s.by_component(objs, "Deployment", name)
        assert so["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": deployment["metadata"]["name"],
        }
        assert "replicas" not in deployment["spec"], f"{name}: KEDA owns the count"
        triggers = so["spec"]["triggers"]
        assert {t["type"] for t in triggers} == {"redis-streams"}
        for t in triggers:
            meta = t["metadata"]
            assert (meta["stream"], meta["consumerGroup"]) == expected[name]
            # The operator runs in its own namespace: the Service's name with the release namespace.
            assert meta["address"] == f"{redis_service}.etl.svc:6379"
            assert t["authenticationRef"]["name"] == auth["metadata"]["name"]
        by_kind = {
            k: t["metadata"][k] for t in triggers for k in ("lagCount", "pendingEntriesCount") if k in t["metadata"]
        }
        assert set(by_kind) == {"lagCount", "pendingEntriesCount"}
    assert scaled["saver"]["spec"]["triggers"][0]["metadata"]["lagCount"] == "7"
    (ref,) = auth["spec"]["secretTargetRef"]
    secret = next(o for o in objs if o["kind"] == "Secret" and o["metadata"]["name"] == ref["name"])
    assert ref["parameter"] == "password" and ref["key"] in secret["data"]


def test_on_sqlite_keda_scales_the_transformers_only():
    objs = k8s.render_objects(KEDA)
    assert set(_scaled(objs)) == {"transformer"}
    assert k8s.by_component(objs, "Deployment", "saver")["spec"]["replicas"] == 1
    assert not [o for o in objs if o["kind"] == "HorizontalPodAutoscaler"]


def _redis_ingress_peers(objs: list[dict]) -> list[dict]:
    redis = next(o for o in objs if o["kind"] == "NetworkPolicy" and o["metadata"]["name"].endswith("-redis"))
    return [peer for rule in redis["spec"]["ingress"] for peer in rule["from"]]


def test_redis_admits_the_keda_operator_namespace_only_when_enabled():
    selector = {"kubernetes.io/metadata.name": "keda-system"}
    peers = _redis_ingress_peers(
        k8s.render_objects(chart._merge(KEDA, {"keda": {"operatorNamespaceSelector": selector}}))
    )
    assert {"namespaceSelector": {"matchLabels": selector}} in peers
    assert not [p for p in _redis_ingress_peers(k8s.render_objects()) if "namespaceSelector" in p]


REFUSALS = [
    (
        {"redis": {"enabled": False}, "secrets": {"redisUrl": "redis://r:6379/0"}},
        "keda.enabled needs the in-cluster Redis",
    ),
    ({"transformer": {"autoscaling": {"enabled": True}}}, "not both"),
    ({"keda": {"saver": {"minReplicas": 5, "maxReplicas": 2}}}, "keda.saver.minReplicas is above maxReplicas"),
]


@pytest.mark.parametrize(("values", "message"), REFUSALS, ids=[m for _, m in REFUSALS])
def test_contradictory_keda_values_fail_with_a_clear_message(values, message):
    with pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(chart._merge(KEDA, values))
    assert "VALUES ERROR" in str(err.value) and message in str(err.value)
