"""The compose `postgres` profile on a real engine: the database starts healthy from .env.example's contract, the
saver's image migrates it through ETL_DATABASE_URL on the compose network, and its volume keeps the data.

postgres:16 is a local stand-in (testbed/standins/postgres.Dockerfile: Debian's PostgreSQL 15 with the official
image's POSTGRES_USER/POSTGRES_PASSWORD/POSTGRES_DB contract), as no image registry is reachable here.
"""

import secrets
import subprocess
import time

import pytest

from tests.compose.composefile import load_raw
from tests.engine.conftest import compose_project, record, write_dotenv

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(600)]
PROJECT = "etl-engine-pg"


def test_postgres_profile_starts_migrates_and_keeps_its_volume(engine, tmp_path):
    started = time.monotonic()
    proj = tmp_path / "proj"
    proj.mkdir()
    password = secrets.token_urlsafe(18)
    # As .env.example says: the password, then the URL naming the profile's service, user and database.
    write_dotenv(
        proj,
        {
            "POSTGRES_PASSWORD": password,
            "ETL_DATABASE_URL": f"postgresql://etl:{password}@postgres:5432/etl",
            "ETL_API_TOKEN": secrets.token_urlsafe(18),
        },
    )
    # The saver's bind mounts must exist (`make keys` makes them; migrating reads none of them).
    for d in ("database", "data", "sftp_data", "ssh_keys"):
        (proj / d).mkdir()
    for f in ("id_ed25519", "known_hosts", "age_recipients.txt"):
        (proj / "ssh_keys" / f).write_text("")

    def psql(url: str, sql: str, check: bool = True) -> subprocess.CompletedProcess:
        """psql in the database's container, over TCP to the service name as the saver reaches it (docker exec:
        `docker-compose exec` answered 0 here for a psql that failed)."""
        return engine.docker("exec", f"{PROJECT}-postgres-1", "psql", url, "-Atc", sql, check=check)

    def tables() -> set[str]:
        out = psql(
            f"postgresql://etl:{password}@postgres:5432/etl",
            "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'",
        )
        return set(out.stdout.split())

    with compose_project(engine, proj, PROJECT, "--profile", "postgres", log_chars=8000) as dc:
        # Without a password the image refuses to initialise the database, and says why.
        image = load_raw()["services"]["postgres"]["image"]
        refused = engine.docker("run", "--rm", "-e", "POSTGRES_USER=etl", image, check=False)
        assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr, refused.stderr[-2000:]

        dc("up", "-d", "--wait", "--wait-timeout", "120", "postgres", timeout=200)
        # Password authentication on the network: the right password in, a wrong one out.
        wrong = psql(f"postgresql://etl:not-{password}@postgres:5432/etl", "SELECT 1", check=False)
        assert wrong.returncode != 0 and "password authentication failed" in wrong.stderr, wrong.stderr
        assert tables() == set()

        # The saver's image migrates the database with the compose environment (ETL_DATABASE_URL from .env).
        migrate = ["run", "--rm", "--no-deps", "-e", "ETL_ENCRYPTION_ENABLED=false", "saver", "python", "-m", "saver"]
        migrated = dc(*migrate, "migrate", timeout=120)
        assert "postgres:5432/etl" in migrated.stderr and password not in migrated.stdout + migrated.stderr
        made = tables()
        assert {"etl_runs", "raw_users", "processed_users", "invalid_users", "schema_migrations"} <= made, made

        # down without -v keeps the named volume: the tables are there after the next up.
        dc("down", timeout=120)
        dc("up", "-d", "--wait", "--wait-timeout", "120", "postgres", timeout=200)
        assert tables() == made
    took = time.monotonic() - started
    record(
        f"compose postgres profile: healthy, migrated by the saver's image ({len(made)} tables), volume kept, "
        f"{took:.0f}s",
        f"postgres profile {len(made)} tables",
    )
