"""Start-up failures name the cause: where a value came from, which path is not writable, a malformed Redis URL."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

import testbed as tb
from tests.integration.test_demo import Demo

SERVICES = ("extractor", "transformer", "saver", "api")


def run_service(name: str, cwd: Path, **settings: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ETL_")} | settings
    return subprocess.run(
        [tb.PYTHON, "-m", name], env=env, cwd=cwd, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def one_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


@pytest.mark.parametrize("service", SERVICES)
@pytest.mark.parametrize(
    ("url", "cause"),
    [
        ("redis//:s3cr3t-pw@localhost:6379/0", "schemes"),
        ("redis://:s3cr3t-pw@localhost:63x9/0", "Port could not be cast"),
        ("redis://etl:s3cr3t-pw@localhost:70000/0", "Port out of range"),
        ("http://:s3cr3t-pw@localhost:6379", "schemes"),
        ("redis://:s3cr3t-pw%ZZ@localhost:6379/0", "percent-encode"),
        ("rediss://etl:s3cr3t-pw%@localhost:6379/0", "percent-encode"),
        ("redis://:s3cr3t-pw%4@localhost:6379/0", "percent-encode"),
    ],
)
def test_a_malformed_redis_url_is_one_line_exit_2_and_the_password_stays_hidden(tmp_path, service, url, cause):
    done = run_service(service, tmp_path, ETL_REDIS_URL=url, ETL_ENCRYPTION_ENABLED="false")
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert line.startswith("invalid setting: ETL_REDIS_URL=") and cause in line
    assert "s3cr3t-pw" not in done.stderr + done.stdout and "***" in line


def test_a_bad_value_from_dotenv_says_it_came_from_dotenv(tmp_path):
    (tmp_path / ".env").write_text("ETL_PAGE_SIZE=abc\nETL_LOG_LEVEL=INFO\n")
    done = run_service("extractor", tmp_path)
    assert done.returncode == 2
    line = one_line(done.stderr)
    assert "ETL_PAGE_SIZE='abc'" in line and "came from .env" in line and "ETL_LOG_LEVEL" not in line
    # The same value from the environment: no word of .env.
    (tmp_path / ".env").unlink()
    done = run_service("extractor", tmp_path, ETL_PAGE_SIZE="abc")
    assert ".env" not in one_line(done.stderr)


@pytest.mark.slow
def test_the_demo_with_dotenv_from_the_example_names_the_variable_and_dotenv(tmp_path):
    demo = Demo(tmp_path / "home")
    shutil.copy(tb.ROOT / ".env.example", demo.home / ".env")
    failed = demo.once(ETL_SOURCE_URL=f"http://127.0.0.1:{tb.free_port()}/users")
    assert failed.returncode != 0
    line = one_line(failed.stderr)
    assert "/run/secrets/age/recipients.txt" in line
    assert "ETL_ENCRYPTION_RECIPIENTS_FILE='/run/secrets/age/recipients.txt' came from" in line
    assert str(demo.home / ".env") in line


@pytest.mark.slow
def test_the_demo_refuses_a_bad_dotenv_value_saying_where_it_was_set(tmp_path):
    demo = Demo(tmp_path / "home")
    (demo.home / ".env").write_text("ETL_RETRY_DELAYS=5,x\n")
    failed = demo.once()
    assert failed.returncode == 2
    line = one_line(failed.stderr)
    assert "ETL_RETRY_DELAYS='5,x'" in line and f"came from {demo.home / '.env'}" in line


def _read_only(folder: Path):
    """Make ``folder`` read-only for this process: a read-only bind mount as root, permissions otherwise."""
    if os.geteuid() != 0:
        folder.chmod(0o555)
        return lambda: folder.chmod(0o755)
    bound = subprocess.run(["mount", "--bind", str(folder), str(folder)], capture_output=True, text=True)
    if bound.returncode != 0:
        pytest.skip(f"root without the right to mount here, and root writes through permissions: {bound.stderr}")
    subprocess.run(["mount", "-o", "remount,bind,ro", str(folder)], check=True)
    return lambda: subprocess.run(["umount", str(folder)], check=True)


@pytest.mark.parametrize(("variable", "target"), [("ETL_DB_PATH", "database/data.db"), ("ETL_DATA_DIR", "data")])
def test_a_read_only_folder_names_the_path_and_not_writable(tmp_path, variable, target):
    folder = tmp_path / target.split("/")[0]
    folder.mkdir()
    undo = _read_only(folder)
    try:
        settings = {
            "ETL_DB_PATH": str(tmp_path / "ok" / "data.db"),
            "ETL_DATA_DIR": str(tmp_path / "ok-data"),
            variable: str(tmp_path / target),
            "ETL_ENCRYPTION_ENABLED": "false",
        }
        done = run_service("saver", tmp_path, **settings)
    finally:
        undo()
    assert done.returncode == 2, done.stderr
    line = one_line(done.stderr)
    assert f"{folder} is not writable" in line and variable in line
