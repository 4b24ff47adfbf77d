"""docker-compose.yml: valid Compose, settings every service accepts, entry points and health checks that exist."""

import json
import re
from pathlib import Path

import jsonschema
import pytest
from pydantic import ValidationError

from api.settings import ApiSettings
from extractor.settings import ExtractorSettings
from saver.settings import SaverSettings
from tests.compose.composefile import (
    ROOT,
    SERVICES,
    InterpolationError,
    dockerfile,
    example_env,
    interpolate,
    load,
    load_raw,
    mounts,
    parse_dotenv,
    service_env,
)
from transformer.settings import TransformerSettings

SETTINGS = {
    "extractor": ExtractorSettings,
    "transformer": TransformerSettings,
    "saver": SaverSettings,
    "api": ApiSettings,
}
SCHEMA = json.loads((Path(__file__).with_name("compose-spec.json")).read_text())
# Made by `make keys` (scripts/gen-keys.sh and the data folders), so absent in a fresh clone.
MADE_BY_MAKE_KEYS = ("./ssh_keys/", "./database", "./data", "./sftp_data")


def settings_of(name: str, env: dict[str, str]):
    """The service's settings from exactly this environment (no .env file, no process environment)."""
    fields = {k.removeprefix("ETL_").lower(): v for k, v in env.items() if k.startswith("ETL_")}
    return SETTINGS[name](_env_file=None, **fields)


class TestInterpolation:
    """The small Compose interpolation the checks rely on."""

    def test_operators(self):
        env = {"A": "1", "E": ""}
        assert interpolate("${A}-${A:-x}-${E:-d}-${E-d}-${U:-u}-$$A-$A", env) == "1-1-d--u-$A-1"
        assert interpolate("${A:+yes}${E:+no}${E+set}", env) == "yesset"
        with pytest.raises(InterpolationError, match="need E"):
            interpolate("${E:?need E}", env)
        assert interpolate("${E?unset only}", env) == ""

    def test_dotenv(self):
        text = "# c\n\nA=1\nB='x # y'\nC=a b # comment\nD=\"q\"\nS=0 3 * * *\n"
        assert parse_dotenv(text) == {"A": "1", "B": "x # y", "C": "a b", "D": "q", "S": "0 3 * * *"}


def test_raw_file_matches_the_compose_specification():
    jsonschema.validate(load_raw(), SCHEMA)


def test_interpolated_file_matches_the_compose_specification():
    jsonschema.validate(load(example_env()), SCHEMA)


def test_missing_api_token_fails_loudly():
    env = {k: v for k, v in example_env().items() if k != "ETL_API_TOKEN"}
    with pytest.raises(InterpolationError, match="ETL_API_TOKEN"):
        load(env)


@pytest.mark.parametrize("name", SERVICES)
def test_service_environment_is_accepted_by_its_settings(name):
    env_file = example_env()
    model = load(env_file)
    env = service_env(model, name, env_file)
    try:
        settings = settings_of(name, env)
    except ValidationError as exc:
        pytest.fail(f"{name} rejects its compose environment:\n{exc}")
    required = [f for f, info in SETTINGS[name].model_fields.items() if info.is_required()]
    missing = [f"ETL_{f.upper()}" for f in required if f"ETL_{f.upper()}" not in env]
    assert missing == [], f"{name}: settings without a default are not provided: {missing}"
    # Containers must reach each other and be reached: nothing listens on loopback only.
    if name == "api":
        assert settings.api_host == "0.0.0.0" and settings.api_auth == "token" and settings.api_token
    else:
        assert settings.ops_host == "0.0.0.0" and settings.ops_port == 9100
    assert settings.redis_url.startswith("redis://redis:")


def test_every_etl_variable_is_a_setting_of_some_service():
    """A misspelt variable would be ignored silently (extra='ignore'): catch it here."""
    known = {f"ETL_{f.upper()}" for cls in SETTINGS.values() for f in cls.model_fields}
    env_file = example_env()
    model = load(env_file)
    seen = set(env_file)
    for name in SERVICES:
        seen |= set(service_env(model, name, env_file))
    assert sorted(v for v in seen if v.startswith("ETL_") and v not in known) == []


def test_saver_paths_follow_its_mounts():
    model = load(example_env())
    saver = model["services"]["saver"]
    env = service_env(model, "saver", example_env())
    targets = {m.target: m for m in mounts(saver)}
    assert str(Path(env["ETL_DB_PATH"]).parent) in targets
    assert env["ETL_DATA_DIR"] in targets
    assert targets[env["ETL_SFTP_KEY_PATH"]].read_only and targets[env["ETL_SFTP_KNOWN_HOSTS"]].read_only
    api = model["services"]["api"]
    api_targets = {m.target: m for m in mounts(api)}
    db_dir = str(Path(service_env(model, "api", example_env())["ETL_DB_PATH"]).parent)
    assert api_targets[db_dir].read_only, "the API must not be able to write the database"
    assert api_targets[db_dir].source == targets[db_dir].source, "saver and API must share one database"


def test_sftp_upload_folder_is_the_mounted_subfolder_of_the_chroot():
    model = load(example_env())
    sftp = model["services"]["sftp"]
    user, _password, _uid, _gid, dirs = sftp["command"][0].split(":")
    remote = service_env(model, "saver", example_env())["ETL_SFTP_REMOTE_DIR"]
    assert user == example_env()["ETL_SFTP_USER"] and remote in dirs.split(",")
    by_target = {m.target: m for m in mounts(sftp)}
    assert f"/home/{user}/{remote}" in by_target, "the chroot home itself is not writable"
    assert by_target[f"/home/{user}/.ssh/keys/sftp_user.pub"].source == "./ssh_keys/sftp_user.pub"
    for key in ("ssh_host_ed25519_key", "ssh_host_rsa_key"):
        assert by_target[f"/etc/ssh/{key}"].source == f"./ssh_keys/{key}"


def test_bind_mount_sources_exist_or_are_made_by_make_keys():
    model = load(example_env())
    makefile = (ROOT / "Makefile").read_text()
    for name, svc in model["services"].items():
        for m in mounts(svc):
            if m.source.startswith(MADE_BY_MAKE_KEYS):
                folder = m.source.removeprefix("./").split("/")[0]
                assert folder == "ssh_keys" or re.search(rf"mkdir -p .*\b{folder}\b", makefile), m.source
            else:
                assert (ROOT / m.source).exists(), f"{name}: mount source {m.source} is missing"


def test_redis_is_durable_and_private():
    redis = load(example_env())["services"]["redis"]
    cmd = redis["command"]
    assert cmd[0] == "redis-server"
    opts = dict(zip(cmd[1::2], cmd[2::2]))
    assert opts["--appendonly"] == "yes" and opts["--maxmemory-policy"] == "noeviction"
    assert any(v.endswith(":/data") and not v.startswith(".") for v in redis["volumes"]), "AOF on a named volume"
    assert "ports" not in redis
    assert redis["healthcheck"]["test"][:2] == ["CMD", "redis-cli"]


@pytest.mark.parametrize("name", SERVICES)
def test_service_runs_its_image_entry_point_with_health_and_shutdown(name):
    model = load(example_env())
    svc = model["services"][name]
    assert svc["image"] == f"etl-{name}:1.0.0"
    # The one Dockerfile at the root, the service named by its build argument.
    assert svc["build"] == {"context": ".", "args": {"SERVICE": name}}
    cmd = svc["command"]
    assert cmd == ["python", "-m", name]
    assert (ROOT / "services" / cmd[2] / "__main__.py").exists(), f"no entry point for python -m {cmd[2]}"
    # service_healthy needs a health check: the image's HEALTHCHECK unless compose overrides it.
    assert "healthcheck" in svc or dockerfile(name).exec_form("HEALTHCHECK")
    assert svc["read_only"] is True and "/tmp" in svc["tmpfs"]
    assert svc["restart"] in ("unless-stopped", "always", "on-failure")
    assert svc["stop_grace_period"] and svc.get("env_file")
    for dep, cond in (svc.get("depends_on") or {}).items():
        assert cond["condition"] == "service_healthy", f"{name} -> {dep}"
        assert "healthcheck" in model["services"][dep] or dep in SERVICES


def test_api_is_published_on_port_8000():
    api = load(example_env())["services"]["api"]
    assert any(str(p).endswith(":8000:8000") for p in api["ports"])


def test_observability_profile_mounts_the_shipped_rules_and_dashboard():
    model = load(example_env())
    prom, graf = model["services"]["prometheus"], model["services"]["grafana"]
    assert prom["profiles"] == ["observability"] and graf["profiles"] == ["observability"]
    assert "./charts/etl/files/alert-rules.yml:/etc/prometheus/rules/alert-rules.yml:ro" in prom["volumes"]
    assert "./observability/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prom["volumes"]
    assert any(v.startswith("./charts/etl/files/grafana-dashboard.json:") for v in graf["volumes"])
    assert "./observability/grafana/provisioning:/etc/grafana/provisioning:ro" in graf["volumes"]
    # Prometheus finds the rules where its config says, and scrapes the ops port compose fixes.
    prom_cfg = (ROOT / "observability" / "prometheus" / "prometheus.yml").read_text()
    assert "/etc/prometheus/rules/alert-rules.yml" in prom_cfg
    for name in ("extractor", "transformer", "saver"):
        assert f"{name}:9100" in prom_cfg
    assert "api:8000" in prom_cfg
    dash_dir = re.search(r"path:\s*(\S+)", (ROOT / "observability/grafana/provisioning/dashboards/etl.yml").read_text())
    target = next(v.split(":")[1] for v in graf["volumes"] if "grafana-dashboard.json" in v)
    assert dash_dir and target.startswith(dash_dir.group(1).rstrip("/") + "/")


# What each third-party image is known to ship for its health check (no engine here to look inside):
# redis-cli in redis, bash in atmoz/sftp (its entrypoint is bash), busybox wget in prom/prometheus,
# curl in grafana/grafana (added to its images for health checks), pg_isready in postgres. Ours run the image's
# Python.
THIRD_PARTY_TOOLS = {
    "redis": "redis-cli",
    "sftp": "bash",
    "prometheus": "wget",
    "grafana": "curl",
    "postgres": "pg_isready",
}


def test_health_checks_use_tools_their_images_have():
    model = load(example_env())
    for name, svc in model["services"].items():
        if name in SERVICES:
            assert "healthcheck" not in svc, f"{name}: the image's HEALTHCHECK (python) is the one to keep"
            assert dockerfile(name).exec_form("HEALTHCHECK")[0] == "python"
            continue
        test = svc["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == THIRD_PARTY_TOOLS[name], f"{name}: {test}"
