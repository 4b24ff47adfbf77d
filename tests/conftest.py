"""Fixtures: real redis-server and OpenSSH SFTP servers on free loopback ports, a source server, pipelines."""

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

import testbed as tb
import testbed.postgres as tbpg
from dummyjson.server import Source
from tests.support import Pipeline, SourceServer


def _version(args: list[str]) -> str:
    exe = tb.which(args[0])
    if not exe:
        return "missing"
    out = subprocess.run([exe, *args[1:]], capture_output=True, text=True)
    return (out.stdout or out.stderr).strip().splitlines()[0]


def pytest_report_header(config):
    return [
        f"redis: {_version(['redis-server', '--version'])}",
        f"openssh: {_version(['ssh', '-V'])}",
        f"sqlite: {sqlite3.sqlite_version}",
        f"postgresql: {tbpg.binaries() or 'missing'}",
    ]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory):
    server = tb.start_redis(tmp_path_factory.mktemp("redis"), aof=True)
    yield server
    server.proc.stop()


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory):
    base = tmp_path_factory.mktemp("sftp")
    server = tb.start_sftp(base / "sshd", base / "keys", base / "upload")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_server():
    """A private PostgreSQL cluster (Debian's postgresql) for the session, removed at the end.

    Skipped without PostgreSQL, unless ETL_POSTGRES_REQUIRED=1 or CI is set: then its absence fails the tests.
    """
    if tbpg.binaries() is None:
        why = "PostgreSQL is not installed (apt-get install postgresql)"
        if os.environ.get("ETL_POSTGRES_REQUIRED") == "1" or os.environ.get("CI"):
            pytest.fail(f"{why}, and ETL_POSTGRES_REQUIRED or CI asks for it")
        pytest.skip(f"{why}; ETL_POSTGRES_REQUIRED=1 makes this a failure")
    server = tbpg.start_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server):
    """The superuser URL of one database of the session's cluster; a test that needs its own calls create_database."""
    return postgres_server.create_database()


@pytest.fixture
def make_source():
    servers: list[SourceServer] = []

    def make(count: int = 208, bad_every: int = 0, users: list | None = None, seed: int = 0) -> SourceServer:
        server = SourceServer(Source(count, seed, bad_every, users)).start()
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.stop()


@pytest.fixture
def make_pipeline(tmp_path, redis_server, sftp_server):
    pipelines: list[Pipeline] = []

    def make(source: SourceServer, upload_dir: Path | None = None, **extra: str) -> Pipeline:
        upload = upload_dir or tmp_path / f"upload{len(pipelines)}"
        upload.mkdir(parents=True, exist_ok=True)
        env = {**sftp_server.env(), "ETL_SFTP_REMOTE_DIR": str(upload)}
        p = Pipeline(tmp_path / f"p{len(pipelines)}", redis_server.url, env, source.url, extra)
        p.upload_dir = upload
        pipelines.append(p)
        return p

    yield make
    for p in pipelines:
        p.stop_all()
        shutil.rmtree(p.upload_dir, ignore_errors=True)
