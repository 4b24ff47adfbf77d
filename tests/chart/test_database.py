"""database.engine: SQLite keeps one saver on a volume; PostgreSQL takes its URL from a Secret, drops the volume and
the affinity, allows several savers and migrates in a pre-install/pre-upgrade hook Job."""

import re

import helm_python
import pytest
import yaml

from saver.__main__ import _parser as saver_parser
from testbed import chart, chartdocs
from tests.chart import k8s

PG = {"database": {"engine": "postgresql", "existingSecret": "db-app", "urlKey": "uri"}}


def _objects(values: dict) -> list[dict]:
    return k8s.render_objects(chart._merge(PG, values))


def _env_refs(container: dict) -> dict[str, tuple[str, str]]:
    """Variables taken from a Secret: name -> (secret, key)."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def _env_names(container: dict) -> set[str]:
    return {e["name"] for e in container.get("env", [])}


def _main_container(objs: list[dict], name: str) -> dict:
    return k8s.pod_spec(k8s.by_component(objs, "Deployment", name))["containers"][0]


@pytest.mark.parametrize("name", k8s.sets_on("postgresql"))
def test_on_postgresql_no_volume_no_affinity_and_the_url_from_the_secret(name):
    values = k8s.VALUE_SETS[name]
    objs = k8s.render_objects(values)
    assert not [o for o in objs if o["kind"] == "PersistentVolumeClaim" and k8s.component(o) == "saver"]
    for component in ("saver", "api"):
        spec = k8s.pod_spec(k8s.by_component(objs, "Deployment", component))
        assert "affinity" not in spec, component
        assert not [v for v in spec["volumes"] if "persistentVolumeClaim" in v], component
        assert "ETL_DB_PATH" not in _env_names(spec["containers"][0]), component
    db = values["database"]
    saver = _main_container(objs, "saver")
    assert _env_refs(saver)["ETL_DATABASE_URL"] == (db["existingSecret"], db["urlKey"])
    # The API reads through its own read-only URL and never holds the saver's credentials.
    api = _main_container(objs, "api")
    assert _env_refs(api)["ETL_API_DATABASE_URL"] == (db["apiExistingSecret"], db["apiUrlKey"])
    assert _env_refs(api)["ETL_API_SQL_DATABASE_URL"] == (db["apiExistingSecret"], db["consoleUrlKey"])
    assert "ETL_DATABASE_URL" not in _env_names(api)
    # Savers share the stream: no Recreate, so an upgrade rolls them.
    assert "strategy" not in k8s.by_component(objs, "Deployment", "saver")["spec"]


def test_on_postgresql_the_saver_replicas_are_the_value_and_the_api_may_share_the_saver_url():
    objs = _objects({"saver": {"replicas": 3}})
    assert k8s.by_component(objs, "Deployment", "saver")["spec"]["replicas"] == 3
    api = _main_container(objs, "api")
    assert "ETL_DATABASE_URL" in _env_refs(api)
    assert _env_refs(api)["ETL_DATABASE_URL"] == ("db-app", "uri")
    # No console login given: the API gets none (and refuses the console on PostgreSQL).
    assert not {"ETL_API_DATABASE_URL", "ETL_API_SQL_DATABASE_URL"} & _env_names(api)
    # Same Secret for both when only the key is given.
    api = _main_container(_objects({"database": {"apiUrlKey": "ro"}}), "api")
    assert _env_refs(api)["ETL_API_DATABASE_URL"] == ("db-app", "ro")


@pytest.mark.parametrize("name", k8s.sets_on("sqlite"))
def test_on_sqlite_nothing_of_postgresql_is_rendered(name):
    objs = k8s.render_objects(k8s.VALUE_SETS[name])
    assert not [o for o in objs if k8s.component(o) == "migrate"]
    for _, c in k8s.containers(objs):
        assert not {"ETL_DATABASE_URL", "ETL_API_DATABASE_URL"} & _env_names(c)


@pytest.mark.parametrize(("create", "account"), [(True, "default"), (False, "etl-runner")])
def test_migrations_run_in_a_pre_install_and_pre_upgrade_hook_job_of_the_saver_image(create, account):
    objs = _objects({"serviceAccount": {"create": create, "name": "etl-runner"}})
    (job,) = [o for o in objs if o["kind"] == "Job" and k8s.component(o) == "migrate"]
    notes = job["metadata"]["annotations"]
    assert notes["helm.sh/hook"] == "pre-install,pre-upgrade"
    assert "before-hook-creation" in notes["helm.sh/hook-delete-policy"]
    assert job["spec"]["activeDeadlineSeconds"] == 600 and job["spec"]["backoffLimit"] >= 1
    spec = k8s.pod_spec(job)
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    # Before the first install the release's own ServiceAccount does not exist yet.
    assert spec["serviceAccountName"] == account
    (c,) = spec["containers"]
    assert c["image"] == _main_container(objs, "saver")["image"]
    assert c["command"][:3] == ["python", "-m", "saver"]
    assert saver_parser().parse_args(c["command"][3:]).command == "migrate"
    assert _env_refs(c) == {"ETL_DATABASE_URL": ("db-app", "uri")}
    # Nothing the pre-install hook could not find: no ConfigMap, no Secret volume.
    assert "envFrom" not in c and all("secret" not in v and "configMap" not in v for v in spec["volumes"])
    env = {e["name"]: e.get("value") for e in c["env"]}
    assert env["ETL_ENCRYPTION_ENABLED"] == "false" and env["ETL_SFTP_ENABLED"] == "false"
    assert env["ETL_DATABASE_READER_ROLE"] == "" and env["ETL_DATABASE_CONSOLE_ROLE"] == ""
    mounts = {m["mountPath"] for m in c["volumeMounts"]}
    assert any(env["ETL_DATA_DIR"].startswith(m + "/") for m in mounts)


def test_the_migration_job_grants_the_roles_of_the_values():
    objs = _objects({"database": {"readerRole": "etl_reader", "consoleRole": "etl_console"}})
    (job,) = [o for o in objs if o["kind"] == "Job" and k8s.component(o) == "migrate"]
    env = {e["name"]: e.get("value") for e in k8s.pod_spec(job)["containers"][0]["env"]}
    assert (env["ETL_DATABASE_READER_ROLE"], env["ETL_DATABASE_CONSOLE_ROLE"]) == ("etl_reader", "etl_console")


def test_database_egress_only_for_the_pods_that_use_it():
    objs = _objects({"database": {"cidrs": ["10.40.0.0/16"], "port": 6432}})
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    for w in k8s.workloads(objs):
        labels = k8s.pod_labels(w)
        mine = [p for p in policies if p["spec"]["podSelector"]["matchLabels"].items() <= labels.items()]
        rules = [r for p in mine for r in p["spec"].get("egress") or []]
        to_db = [r for r in rules if {"port": 6432, "protocol": "TCP"} in r.get("ports", [])]
        if k8s.component(w) in ("saver", "api", "migrate"):
            assert [r["to"] for r in to_db] == [[{"ipBlock": {"cidr": "10.40.0.0/16"}}]], k8s.component(w)
        else:
            assert to_db == [], k8s.component(w)


SQLITE_REFUSALS = [
    ({"saver": {"replicas": 2}}, "saver.replicas is 2: SQLite has exactly one writer"),
    ({"database": {"engine": "postgresql"}}, "set database.existingSecret"),
    ({"database": {"existingSecret": "db-app"}}, "are for PostgreSQL"),
    ({"database": {"consoleUrlKey": "console"}}, "are for PostgreSQL"),
]


@pytest.mark.parametrize(("values", "message"), SQLITE_REFUSALS, ids=[m for _, m in SQLITE_REFUSALS])
def test_contradictory_database_values_fail_with_a_clear_message(values, message):
    with pytest.raises(helm_python.HelmRenderError) as err:
        chart.render(values)
    assert "VALUES ERROR" in str(err.value) and message in str(err.value)


def test_the_engine_is_one_of_the_two():
    with pytest.raises(helm_python.HelmValuesError, match="engine"):
        chart.render({"database": {"engine": "mysql"}})


def _readme_values() -> list[dict]:
    """The values examples of the chart README's Database section."""
    text = "".join(s.read_text() for s in chartdocs.SECTIONS)
    blocks = [yaml.safe_load(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.S)]
    return [b for b in blocks if "database" in b]


@pytest.mark.parametrize("values", _readme_values(), ids=["cloudnativepg", "managed"])
def test_the_readme_s_database_examples_render(values):
    objs = k8s.render_objects(values)
    db = values["database"]
    saver = _main_container(objs, "saver")
    assert _env_refs(saver)["ETL_DATABASE_URL"] == (db["existingSecret"], db["urlKey"])
    (job,) = [o for o in objs if o["kind"] == "Job" and k8s.component(o) == "migrate"]
    env = {e["name"]: e.get("value") for e in k8s.pod_spec(job)["containers"][0]["env"]}
    assert env["ETL_DATABASE_READER_ROLE"] == db["readerRole"]
