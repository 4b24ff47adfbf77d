"""`docker compose up --wait` on a real engine: the project's images, .env.example and `make keys`, one run via the API.

As a user sets it up (cp .env.example .env; make keys, as the uid in HOST_UID), with two changes to .env:
the source is a DummyJSON-compatible server on the compose network (nothing outside the machine is
reached) and the run starts from POST /etl_runs, not on start. An override file adds that server and
publishes the API on a free loopback port. Checked from the host: the run succeeds after a restart of
the saver in the middle of it, the tables' counts, the three encrypted files on the SFTP folder decrypt
to the tables' rows, the API answers through its published port, `stop` ends every service by SIGTERM;
`down -v` leaves nothing.
"""

import json
import os
import secrets
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import yaml

import testbed as tb
from tests.compose.composefile import ROOT
from tests.engine.conftest import compose_project, record, write_dotenv

pytestmark = [pytest.mark.slow, pytest.mark.engine, pytest.mark.timeout(900)]
USERS = 6000
BAD_EVERY = 9
PROJECT = "etl-engine"


def _dotenv(proj: Path, token: str) -> dict[str, str]:
    """.env.example with the test's changes, written as proj/.env; returns the parsed values."""
    changes = {
        "ETL_API_TOKEN": token,
        "ETL_SOURCE_URL": "http://source:8001/users",
        "ETL_RUN_ON_START": "false",
    }
    return write_dotenv(proj, changes)


def _override(proj: Path, api_port: int) -> Path:
    """The source server on the compose network, and the API published on a free loopback port.

    The source runs on the API's image: its virtualenv has what the server needs (orjson).
    """
    override = {
        "services": {
            "source": {
                "image": "etl-api:1.0.0",
                "command": f"python3 -m dummyjson --host 0.0.0.0 --port 8001 --count {USERS} "
                f"--bad-every {BAD_EVERY} --pool 500".split(),
                "environment": {"PYTHONPATH": "/src"},
                "volumes": [f"{ROOT / 'services' / 'dummyjson'}:/src/dummyjson:ro"],
                "user": "65534:65534",
                "read_only": True,
                "healthcheck": {"disable": True},  # the API image's check is not this server's
            },
            "extractor": {"depends_on": {"source": {"condition": "service_started"}}},
            "api": {"ports": ["127.0.0.1:${ENGINE_API_PORT}:8000"]},
        }
    }
    text = yaml.safe_dump(override, sort_keys=False)
    # Replace the compose file's port list (merging would keep its fixed 8000).
    text = text.replace("ports:\n", "ports: !override\n")
    path = proj / "engine-override.yml"
    path.write_text(text.replace("${ENGINE_API_PORT}", str(api_port)))
    return path


def _runs(db: Path) -> list[dict]:
    if not db.exists():
        return []
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
            conn.row_factory = sqlite3.Row
            return [dict(r) for r in conn.execute("SELECT * FROM etl_runs ORDER BY id")]
    except sqlite3.OperationalError:
        return []


def _count(db: Path, sql: str, *args) -> int:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
        return conn.execute(sql, args).fetchone()[0]


def test_compose_up_runs_the_pipeline_on_the_engine(engine, tmp_path):
    started = time.monotonic()
    proj = tmp_path / "proj"
    proj.mkdir()
    token = secrets.token_urlsafe(24)
    env = _dotenv(proj, token)
    uid, gid = int(env["HOST_UID"]), int(env["HOST_GID"])
    # `make keys`: the keys, the age pair and the data folders, owned by the user of HOST_UID.
    subprocess.run(
        [str(ROOT / "scripts" / "gen-keys.sh"), "ssh_keys", "sftp", "22"],
        cwd=proj,
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
    )
    for d in ("database", "data", "sftp_data"):
        (proj / d).mkdir()
    # The data contract compose mounts from the checkout (services/transformer/contracts).
    shutil.copytree(ROOT / "services" / "transformer" / "contracts", proj / "services" / "transformer" / "contracts")
    for p in [proj, *proj.rglob("*")]:
        os.chown(p, uid, gid)
    os.chmod(tmp_path, 0o755)
    api_port = tb.free_port()
    db = proj / "database" / "data.db"
    with compose_project(engine, proj, PROJECT, "-f", str(_override(proj, api_port))) as dc:

        def logs() -> str:
            return dc("logs", "--no-color", "--tail", "60", check=False).stdout[-12000:]

        dc("up", "-d", "--no-build", "--pull", "never", "--wait", "--wait-timeout", "240", timeout=400)
        ps = json.loads("[" + ",".join(dc("ps", "--format", "json").stdout.split("\n")[:-1]) + "]")
        health = {c["Service"]: c.get("Health", "") for c in ps}
        assert all(health[s] == "healthy" for s in ("redis", "sftp", "extractor", "transformer", "saver", "api"))

        # The API through its published port on the loopback address only.
        ports = engine.docker("port", f"{PROJECT}-api-1").stdout.split()
        assert ports[-1] == f"127.0.0.1:{api_port}", ports
        api = f"http://127.0.0.1:{api_port}"
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.get(f"{api}/healthz", timeout=10).status_code == 200
        assert httpx.get(f"{api}/etl_runs", timeout=10).status_code == 401
        # The web console's static files are package data of api: the image must carry them.
        console = httpx.get(f"{api}/ui/", timeout=10)
        assert console.status_code == 200 and "<html" in console.text.lower(), console.text[:300]
        requested = httpx.post(f"{api}/etl_runs", headers=auth, timeout=10)
        assert requested.status_code == 202, requested.text

        # Restart the saver while the run is going: as soon as it has loaded a page, before the run ends.
        restarted_mid_run = False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            runs = _runs(db)
            if runs and runs[-1]["status"] not in ("succeeded", "failed"):
                if _count(db, "SELECT count(*) FROM loaded_pages WHERE run_id = ?", runs[-1]["run_id"]) > 0:
                    dc("restart", "saver")
                    restarted_mid_run = _runs(db)[-1]["status"] != "succeeded"
                    break
            elif runs:
                break
            time.sleep(0.05)
        assert restarted_mid_run, f"the run ended before the saver could be restarted: {_runs(db)}\n{logs()}"
        while time.monotonic() < deadline:
            runs = _runs(db)
            if runs and runs[-1]["status"] in ("succeeded", "failed"):
                break
            time.sleep(0.5)
        (run,) = _runs(db)
        assert run["status"] == "succeeded", f"{run}\n{logs()}"

        # Table counts: every user once, across a restart in the middle of the run.
        rid = run["run_id"]
        raw = _count(db, "SELECT count(*) FROM raw_users WHERE run_id = ?", rid)
        valid = _count(db, "SELECT count(*) FROM processed_users WHERE run_id = ?", rid)
        invalid = _count(db, "SELECT count(*) FROM invalid_users WHERE run_id = ?", rid)
        assert raw == USERS and valid + invalid == USERS and invalid == USERS // BAD_EVERY
        assert (run["valid_count"], run["invalid_count"]) == (valid, invalid)

        # The three encrypted files on the SFTP folder decrypt (age identity from `make keys`) to the tables.
        upload = proj / "sftp_data"
        files = sorted(upload.rglob("*.age"))
        assert len(files) == 3, files
        lines = {}
        for f in files:
            plain = tmp_path / f.name.removesuffix(".age")
            subprocess.run(
                [sys.executable, "-m", "saver", "decrypt", "-i", str(proj / "ssh_keys" / "age_identity.txt"),
                 str(f), str(plain)],
                check=True, capture_output=True,
            )  # fmt: skip
            lines[f.name] = [json.loads(line) for line in plain.read_text().splitlines()]
        by_kind = {k: next(v for n, v in lines.items() if n == f"{Path(run[k]).name}.age") for k in
                   ("raw_file", "processed_file", "dlq_file")}  # fmt: skip
        assert len(by_kind["raw_file"]) == raw
        assert len(by_kind["processed_file"]) == valid and len(by_kind["dlq_file"]) == invalid
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            emails = sorted(e for (e,) in conn.execute("SELECT email FROM processed_users WHERE run_id = ?", (rid,)))
        assert sorted(r["email"] for r in by_kind["processed_file"]) == emails

        # The API reads the saver's database through the same folder, read-only.
        detail = httpx.get(f"{api}/etl_runs/{rid}", headers=auth, timeout=10)
        assert detail.status_code == 200 and detail.json()["status"] == "succeeded"
        assert detail.json()["valid_count"] == valid

        # `docker compose stop`: SIGTERM through tini; each service ends by itself within stop_grace_period.
        dc("stop", timeout=180)
        for name in ("extractor", "transformer", "saver", "api"):
            code = engine.docker("inspect", "-f", "{{.State.ExitCode}}", f"{PROJECT}-{name}-1").stdout.strip()
            # uvicorn re-raises SIGTERM after its graceful shutdown (143); 137 would be the SIGKILL.
            assert code in ("0", "143"), f"{name} exited {code}\n{logs()}"
    took = time.monotonic() - started
    record(
        f"compose: run {rid} succeeded, raw={raw} valid={valid} invalid={invalid}, 3 files decrypted, "
        f"saver restarted mid-run, {took:.0f}s",
        f"compose run {rid} raw={raw} valid={valid} invalid={invalid}",
    )
    shutil.rmtree(proj, ignore_errors=True)
