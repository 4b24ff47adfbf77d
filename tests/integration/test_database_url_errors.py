"""A database URL that cannot be used stops the saver and the demo with one line naming the cause, exit code 2."""

import os
import subprocess

import pytest

import testbed as tb
from tests.integration.test_demo import Demo, one_line

SECRET = "s3cr3t-pw"
# Each kind of bad ETL_DATABASE_URL and the words its line must hold; "{pg}" is the test server's address.
BAD_URLS = {
    "wrong password": (f"postgresql://postgres:{SECRET}@{{pg}}/postgres", "login refused"),
    "nothing on the port": (f"postgresql://etl:{SECRET}@127.0.0.1:1/etl", "connection refused at 127.0.0.1:1"),
    "missing database": ("{superuser}/nodb", "nodb does not exist"),
    "unknown host": (f"postgresql://etl:{SECRET}@nohost.invalid:5432/etl", "nohost.invalid cannot be resolved"),
    "other engine": (f"mysql://etl:{SECRET}@127.0.0.1/etl", "names no engine"),
    "bad percent-encoding": ("postgresql://etl:s3%ZZcret@127.0.0.1:1/etl", "malformed"),
}


def _url(kind: str, postgres_server) -> tuple[str, str]:
    template, cause = BAD_URLS[kind]
    superuser = postgres_server.url().rsplit("/", 1)[0]
    return template.format(pg=f"127.0.0.1:{postgres_server.port}", superuser=superuser), cause


def _check(done: subprocess.CompletedProcess, cause: str, *secrets: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout, done.stderr
    for secret in (SECRET, "s3%ZZcret", *secrets):
        assert secret not in done.stderr + done.stdout
    assert cause in one_line(done.stderr), done.stderr


@pytest.mark.parametrize("kind", list(BAD_URLS))
def test_the_saver_service_names_a_bad_database_url_in_one_line(tmp_path, postgres_server, kind):
    url, cause = _url(kind, postgres_server)
    env = {
        "PATH": os.environ["PATH"],
        "ETL_DATABASE_URL": url,
        "ETL_DATA_DIR": str(tmp_path / "data"),
        "ETL_REDIS_URL": "redis://127.0.0.1:1/0",  # never reached: the database is opened first
    }
    done = subprocess.run([tb.PYTHON, "-m", "saver"], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    _check(done, cause, postgres_server.password)


@pytest.mark.slow
@pytest.mark.parametrize("kind", list(BAD_URLS))
def test_the_demo_names_a_bad_database_url_in_one_line(tmp_path, postgres_server, kind):
    url, cause = _url(kind, postgres_server)
    done = Demo(tmp_path / "home").once(ETL_DATABASE_URL=url)
    _check(done, cause, postgres_server.password)
