"""The operators' CLI (``etl``) as a real process against a real API over runs the services loaded: --json parsed,
exit codes checked, --help on every command."""

import csv
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

import testbed as tb
from dummyjson.server import Source
from etlctl.cli import app
from saver import crypto
from tests.integration.test_api import TOKEN, Api
from tests.support import Pipeline, SourceServer, Stack, project

OPERATOR_TOKEN = "op-token"
ETL = Path(sys.executable).with_name("etl")  # the console script of [project.scripts], as pipx would install it


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_server, sftp_server):
    """One run loaded by the services (every 9th user invalid), the extractor service for 'runs start', an API."""
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "upload").mkdir()
    source = SourceServer(Source(230, 5, 9)).start()
    p = Pipeline(
        tmp / "p", redis_server.url, {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(tmp / "upload")}, source.url
    )
    p.start_workers()
    try:
        runs = p.load_runs([source])
        tb.wait_for_quality(p.db_path, runs[0]["run_id"], logs=p.logs)
        p.start("extractor")
        api = Api(p, "api-cli", ETL_API_OPERATOR_TOKEN=OPERATOR_TOKEN)
        yield Stack(p, runs, api)
        api.client.close()
    finally:
        p.stop_all()
        source.stop()


def etl(stack: Stack, *args: str, operator: bool = False, env: dict | None = None, timeout: float = 120):
    """Run the ``etl`` script with the pipeline's settings and the API's address and token in the environment."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")}
    settings = stack.pipeline.env(ETL_API_URL=f"http://127.0.0.1:{stack.api.port}", ETL_API_TOKEN=TOKEN)
    settings.pop("ETL_API_OPERATOR_TOKEN", None)
    if operator:
        settings["ETL_API_OPERATOR_TOKEN"] = OPERATOR_TOKEN
    return subprocess.run(
        [str(ETL), *args], env=base | settings | (env or {}), capture_output=True, text=True, timeout=timeout
    )


def as_json(done: subprocess.CompletedProcess):
    assert done.returncode == 0, done.stdout + done.stderr
    return json.loads(done.stdout)


def test_the_console_script_is_declared_and_installed():
    scripts = project()["scripts"]
    assert scripts["etl"] == "etlctl.cli:app"
    assert ETL.exists(), "pip install -e . (scripts/bootstrap.sh) installs the etl script"


def test_runs_list_and_show(stack):
    run = stack.runs[0]
    listed = as_json(etl(stack, "--json", "runs", "list"))
    assert [r["run_id"] for r in listed][-1] == run["run_id"]
    shown = as_json(etl(stack, "--json", "runs", "show", run["run_id"]))
    assert (shown["status"], shown["raw_count"], shown["invalid_count"]) == ("succeeded", 230, 25)
    assert shown["pages_loaded"] == shown["pages_expected"] == 3 and len(shown["files"]) == 3
    text = etl(stack, "runs", "show", str(run["id"]))
    assert text.returncode == 0 and run["run_id"] in text.stdout and "pages 3/3" in text.stdout


def test_not_found_refused_and_unreachable_have_their_exit_codes(stack):
    missing = etl(stack, "runs", "show", "no-such-run")
    assert missing.returncode == 3 and "404" in missing.stderr and missing.stdout == ""
    refused = etl(stack, "runs", "list", env={"ETL_API_TOKEN": "wrong"})
    assert refused.returncode == 5 and "ETL_API_TOKEN" in refused.stderr
    away = etl(stack, "runs", "list", env={"ETL_API_URL": f"http://127.0.0.1:{tb.free_port()}"})
    assert away.returncode == 6 and "cannot reach the API" in away.stderr
    usage = etl(stack, "export", "raw_users", "-o", "x.csv", "--format", "xml")
    assert usage.returncode == 2


def test_quality_and_export(stack, tmp_path):
    run = stack.runs[0]
    q = as_json(etl(stack, "--json", "quality", run["run_id"]))
    assert (q["records"], q["invalid"]) == (230, 25)
    out = tmp_path / "processed.csv"
    done = as_json(etl(stack, "--json", "export", "processed_users", "--run-id", run["run_id"], "-o", str(out)))
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert done["bytes"] == out.stat().st_size and len(rows) == 205
    assert {r["run_id"] for r in rows} == {run["run_id"]} and "record" not in rows[0]


def test_dead_letters_list_replay_drop_and_audit(stack):
    p = stack.pipeline
    p.redis.xadd(p.keys.raw_stream, {"data": b"{not json"})
    deadline = time.monotonic() + 20
    while not (dead := as_json(etl(stack, "--json", "dead-letters", "list"))):
        assert time.monotonic() < deadline, "the poison entry was never dead-lettered"
    assert "not JSON" in dead[0]["reason"]
    refused = etl(stack, "dead-letters", "drop", dead[0]["id"])  # the read token only
    assert refused.returncode == 5 and "403" in refused.stderr
    both = etl(stack, "dead-letters", "drop", dead[0]["id"], "--all", operator=True)
    assert both.returncode == 2 and "exactly one" in both.stderr
    dropped = as_json(etl(stack, "--json", "dead-letters", "drop", dead[0]["id"], "--actor", "ops", operator=True))
    assert dropped["done"] == 1 and dropped["results"][0]["status"] == "done"
    again = as_json(etl(stack, "--json", "dead-letters", "replay", dead[0]["id"], operator=True))
    assert again["done"] == 0 and again["results"][0]["status"] == "missing"
    audit = as_json(etl(stack, "--json", "dead-letters", "audit"))
    assert (audit[0]["action"], audit[0]["dead_id"], audit[0]["actor"]) == ("drop", dead[0]["id"], "ops")


def test_retention_plan_through_the_saver(stack):
    report = as_json(etl(stack, "--json", "retention", "plan", operator=True))
    assert report["dry_run"] is True and report["trigger"] == "api" and report["errors"] == []
    # The only run is the latest success: nothing may go whatever the settings.
    assert report["protected"] == [stack.runs[0]["run_id"]]
    assert all(ids == [] for ids in report["runs"].values())
    reports = as_json(etl(stack, "--json", "retention", "reports"))
    assert reports[0]["request_id"] == report["request_id"]
    refused = etl(stack, "retention", "apply")
    assert refused.returncode == 5
    # Applied (this saver has no bound set): nothing removed, and the application is reported like the plan.
    applied = as_json(etl(stack, "--json", "retention", "apply", operator=True))
    assert applied["dry_run"] is False and applied["errors"] == [] and applied["vacuum"] == "incremental"
    assert applied["removed"]["rows"] == dict.fromkeys(("raw_users", "processed_users", "invalid_users"), 0)
    assert as_json(etl(stack, "--json", "retention", "reports"))[0]["request_id"] == applied["request_id"]


def test_runs_start_follows_the_run_to_its_end(stack):
    done = etl(stack, "--json", "runs", "start", "--follow", "--interval", "0.2", "--timeout", "90")
    final = as_json(done)
    assert final["status"] == "succeeded" and final["raw_count"] == 230
    assert final["run_id"] != stack.runs[0]["run_id"]
    assert f"{final['run_id']} succeeded: page 3/3, 230/230 users" in done.stderr  # progress on stderr with --json


def test_check_reaches_every_dependency_and_names_the_one_it_cannot(stack):
    checks = as_json(etl(stack, "--json", "check"))
    assert [(c["name"], c["ok"]) for c in checks] == [
        ("redis", True),
        ("source", True),
        ("sftp", True),
        ("database", True),
        ("api", True),
    ], checks
    down = etl(stack, "check", env={"ETL_REDIS_URL": f"redis://127.0.0.1:{tb.free_port()}/0"})
    assert down.returncode == 1
    lines = down.stdout.splitlines()
    assert len(lines) == 5 and lines[0].startswith("FAIL redis") and all(x.startswith("ok") for x in lines[1:])


def test_check_reads_the_database_the_url_names(stack):
    """ETL_DATABASE_URL chooses the database (PostgreSQL here, nothing listening): `etl check` must check that one,
    not the SQLite file of ETL_DB_PATH the saver no longer uses, and must not print the password."""
    url = f"postgresql://etl:s3cr3t-pw@127.0.0.1:{tb.free_port()}/etl"
    done = etl(stack, "check", env={"ETL_DATABASE_URL": url})
    line = next(x for x in done.stdout.splitlines() if " database " in x)
    assert line.startswith("FAIL database"), done.stdout
    assert done.returncode == 1 and "s3cr3t-pw" not in done.stdout + done.stderr


def test_decrypt_wraps_the_saver_command(tmp_path):
    identity = tmp_path / "id.txt"
    public = crypto.keygen(str(identity))
    sealed = tmp_path / "f.jsonl.age"
    with sealed.open("wb") as fh:
        crypto.encrypt_chunks([b'{"id": 1}\n'], fh, crypto.parse_recipients(public))
    out = tmp_path / "f.jsonl"
    done = subprocess.run([str(ETL), "decrypt", "-i", str(identity), str(sealed), str(out)], capture_output=True)
    assert done.returncode == 0 and out.read_bytes() == b'{"id": 1}\n'
    other = tmp_path / "other.txt"
    crypto.keygen(str(other))
    bad = subprocess.run([str(ETL), "decrypt", "-i", str(other), str(sealed), str(tmp_path / "no.jsonl")])
    assert bad.returncode == 1 and not (tmp_path / "no.jsonl").exists()


def _commands(group, prefix: tuple[str, ...] = ()):
    for name, command in group.commands.items():
        yield (*prefix, name)
        if hasattr(command, "commands"):  # a group (Typer ships its own Click)
            yield from _commands(command, (*prefix, name))


def test_every_command_has_help():
    root = typer.main.get_command(app)
    paths = list(_commands(root))
    assert len(paths) >= 17
    for path in [(), *paths]:
        result = CliRunner().invoke(app, [*path, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, path
