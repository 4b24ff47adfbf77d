"""values.yaml is documented key by key and values.schema.json (draft-07, closed) rejects wrong values."""

import json

import helm_python
import jsonschema
import pytest
import yaml

from testbed import chart
from tests.chart import k8s

SCHEMA = json.loads((chart.CHART / "values.schema.json").read_text())
DEFAULTS = yaml.safe_load((chart.CHART / "values.yaml").read_text())


def _closed(schema: dict, path: str = "") -> list[str]:
    """Paths of object schemas with properties that still allow unknown keys."""
    out = []
    if schema.get("type") == "object" and "properties" in schema:
        if schema.get("additionalProperties") is not False:
            out.append(path or "<root>")
        for key, sub in schema["properties"].items():
            out += _closed(sub, f"{path}.{key}".lstrip("."))
    for sub in (schema.get("items"),):
        if isinstance(sub, dict):
            out += _closed(sub, path + "[]")
    return out


def test_schema_is_draft_07_and_every_object_is_closed():
    assert SCHEMA["$schema"] == "http://json-schema.org/draft-07/schema#"
    jsonschema.Draft7Validator.check_schema(SCHEMA)
    assert _closed(SCHEMA) == []


@pytest.mark.parametrize("name", sorted(k8s.VALUE_SETS))
def test_shipped_values_meet_the_schema(name):
    merged = chart.load_values([chart.CHART / "values.yaml"]) | {}
    merged = chart._merge(merged, k8s.VALUE_SETS[name])
    jsonschema.Draft7Validator(SCHEMA).validate(merged)


def test_every_key_is_preceded_by_a_comment_starting_with_its_name():
    keys = k8s.values_file_keys(chart.CHART / "values.yaml")
    assert len(keys) > 100
    schema_paths = set()

    def walk(s: dict, path: str) -> None:
        for key, sub in s.get("properties", {}).items():
            p = f"{path}.{key}".lstrip(".")
            schema_paths.add(p)
            walk(sub, p)

    walk(SCHEMA, "")
    # Keys of free-form maps (labels, env, resources' requests/limits) are data, not chart settings.
    documented = [(k, c) for k, c in keys if k in schema_paths and not k.split(".")[-2:-1] == ["resources"]]
    missing = [k for k, c in documented if not (c and c.lstrip("# ").startswith(k + ":"))]
    assert missing == []
    # And every schema key is in values.yaml, so nothing is settable without a documented default.
    top_keys = {k for k, _ in keys}
    assert {p for p in schema_paths if ".requests" not in p and ".limits" not in p} <= top_keys


def test_camel_case_keys():
    for key, _ in k8s.values_file_keys(chart.CHART / "values.yaml"):
        last = key.split(".")[-1]
        if key in {"metrics.dashboard.labels.grafana_dashboard"} or "/" in last:
            continue
        assert last[0].islower() and "_" not in last and "-" not in last, key


BAD_VALUES = [
    ({"transformer": {"replicas": "two"}}, "/transformer/replicas"),
    ({"api": {"replicas": -1}}, "/api/replicas"),
    ({"extractor": {"mode": "daemonset"}}, "/extractor/mode"),
    ({"extractor": {"runOnStart": "yes"}}, "/extractor/runOnStart"),
    ({"api": {"bogus": 1}}, "bogus"),
    ({"redis": {"image": {"tag": "latest"}}}, "/redis/image/tag"),
    ({"image": {"tag": "latest"}}, "/image/tag"),
    ({"unknownTopLevel": True}, "unknownTopLevel"),
    ({"saver": {"persistence": {"size": "lots"}}}, "/saver/persistence/size"),
    ({"config": {"extra": {"NOT_ETL": "x"}}}, "NOT_ETL"),
    ({"api": {"ingress": {"paths": [{"path": "/", "pathType": "Wild"}]}}}, "pathType"),
    ({"networkPolicy": {"sourceCidrs": ["everywhere"]}}, "sourceCidrs"),
]


@pytest.mark.parametrize(("values", "where"), BAD_VALUES, ids=[w for _, w in BAD_VALUES])
def test_helm_refuses_wrong_types_and_unknown_keys(values, where):
    with pytest.raises(helm_python.HelmValuesError) as err:
        chart.render(values)
    assert where.strip("/").split("/")[-1] in str(err.value)
    # The same verdict from jsonschema on the merged values, and from helm lint.
    merged = chart._merge(DEFAULTS, values)
    assert list(jsonschema.Draft7Validator(SCHEMA).iter_errors(merged))
    assert chart.lint(values)["errors"] or [m for m in chart.lint(values)["messages"] if m["severity"] == 3]


CONTRADICTIONS = [
    ({"redis": {"enabled": False}}, "secrets.redisUrl"),
    ({"externalSftp": {"host": "sftp.example.com"}}, "secrets.sftpPrivateKey"),
    (
        {"externalSftp": {"host": "h"}, "secrets": {"sftpPrivateKey": "k", "sftpKnownHosts": "h k"}},
        "secrets.encryptionRecipients",
    ),
    ({"sftp": {"enabled": True}, "externalSftp": {"host": "h"}}, "not both"),
    ({"sftp": {"enabled": True}, "secrets": {"existingSecret": "s"}}, "sftp.authorizedKey"),
    ({"api": {"ingress": {"enabled": True, "tls": {"enabled": True}}}}, "api.ingress.host"),
    ({"transformer": {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}}}, "minReplicas"),
]


@pytest.mark.parametrize(("values", "message"), CONTRADICTIONS, ids=[m for _, m in CONTRADICTIONS])
def test_validate_values_fails_with_a_clear_message(values, message):
    with pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(values)
    assert "VALUES ERROR" in str(err.value) and message in str(err.value)


def test_every_property_of_the_schema_has_a_description():
    def undescribed(schema: dict, path: str) -> list[str]:
        out = []
        for key, sub in schema.get("properties", {}).items():
            p = f"{path}.{key}".lstrip(".")
            if not str(sub.get("description", "")).strip():
                out.append(p)
            out += undescribed(sub, p)
        if isinstance(schema.get("items"), dict):
            out += undescribed(schema["items"], path + "[]")
        return out

    assert undescribed(SCHEMA, "") == []
    assert undescribed({"properties": {"x": {"properties": {"y": {}}}}}, "") == ["x", "x.y"]
