"""Test helpers: a pipeline of real service processes against real Redis, SFTP and a source server."""

import json
import sqlite3
import subprocess
import threading
import time
import tomllib
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

import testbed as tb
from dummyjson.server import Source, build
from etl_common.keys import Keys

SHARED_USERS = Path(__file__).resolve().parents[2] / "shared" / "data" / "dummyjson" / "users.json"


def project() -> dict[str, Any]:
    """The ``[project]`` table of pyproject.toml."""
    return tomllib.loads((tb.ROOT / "pyproject.toml").read_text())["project"]


def real_users() -> list[dict] | None:
    """DummyJSON's real 208 users when the shared copy is present (tests only)."""
    if SHARED_USERS.exists():
        return json.loads(SHARED_USERS.read_text())
    return None


@dataclass
class SourceServer:
    """The DummyJSON-compatible server on a free loopback port, in a thread of the test process."""

    source: Source
    port: int = 0
    _server: Any = None

    def start(self, port: int = 0) -> "SourceServer":
        """Serve on ``port`` (0: a free one; the old port to come back after ``stop``)."""
        self._server = build("127.0.0.1", port or self.port, self.source)
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/users"

    def faults(self, rules: list[dict] | None = None, **extra: Any) -> None:
        httpx.post(f"http://127.0.0.1:{self.port}/_faults", json={"rules": rules or [], **extra}).raise_for_status()

    def requests(self) -> list[dict]:
        return list(self.source.requests)


# Short retries, waits and schedules, so a test's faults play out in seconds.
TEST_SETTINGS = {
    "ETL_RETRY_DELAYS": "0.05,0.1,0.2",
    "ETL_BLOCK_MS": "200",
    "ETL_CLAIM_IDLE_MS": "1500",
    "ETL_SCHEDULE": "0 3 * * *",
    "ETL_SFTP_BACKOFF_S": "0.1",
    "ETL_UPLOAD_RETRY_S": "1",
    "ETL_UPLOAD_RETRY_MAX_S": "2",
    "ETL_API_AUTH": "token",
    "ETL_API_TOKEN": "test-token",
    "ETL_REQUEST_TIMEOUT_S": "5",
}


@dataclass
class Pipeline:
    """The services of one test as real processes, sharing a fresh key prefix and database."""

    tmp: Path
    redis_url: str
    sftp_env: dict[str, str]
    source_url: str
    extra: dict[str, str] = field(default_factory=dict)
    procs: dict[str, tb.Proc] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}:"
        self.keys = Keys(self.prefix)
        self.stack = tb.Stack(self.tmp, redis=self.redis_url, source_url=self.source_url, prefix=self.prefix)
        self.stack.procs = self.procs
        self.db_path = self.stack.db_path
        self.data_dir = self.stack.data_dir
        self.logdir = self.stack.logdir
        self.redis = redis.Redis.from_url(self.redis_url)

    @property
    def database(self) -> Path | str:
        """The database the services share: the SQLite file, or PostgreSQL when ``extra`` names ETL_DATABASE_URL."""
        return self.extra.get("ETL_DATABASE_URL") or self.db_path

    def env(self, **overrides: str) -> dict[str, str]:
        """The stack's settings under the tests' fast retries and waits, ``sftp_env``, ``extra`` and ``overrides``."""
        # A test may point the pipeline at another Redis or source between starts.
        # A test may also move the database and the data folder (a small volume) before the services start.
        parts = {
            "ETL_REDIS_URL": self.redis_url,
            "ETL_SOURCE_URL": self.source_url,
            "ETL_DB_PATH": str(self.db_path),
            "ETL_DATA_DIR": str(self.data_dir),
        }
        return self.stack.env(**{**parts, **TEST_SETTINGS, **self.sftp_env, **self.extra, **overrides})

    def start(self, name: str, *args: str, tag: str = "", **overrides: str) -> tb.Proc:
        """The service as a process, not waited for (a test may expect it to fail at start)."""
        return self.stack.start(name, *args, tag=tag, wait=False, **self.env(**overrides))

    def load_runs(self, sources: "list[SourceServer]") -> list[sqlite3.Row]:
        """One run per source, in order, through ``extractor once``; each run's row once it has succeeded."""
        runs = []
        for i, source in enumerate(sources):
            done = self.extract(ETL_SOURCE_URL=source.url)
            assert done.returncode == 0, done.stdout + done.stderr
            runs.append(tb.wait_for_run(self.database, ("succeeded",), count=i + 1, logs=self.logs))
            time.sleep(1.1)  # the runs' file names differ by their start second
        return runs

    def start_observed(self) -> dict[str, int]:
        """The four services with /metrics (workers) or the API on free loopback ports; service name -> port.

        The extractor runs as the service (a run at start), so its /metrics stays up after the run.
        """
        ports = {name: tb.free_port() for name in ("extractor", "transformer", "saver", "api")}
        ops = {"ETL_OPS_HOST": "127.0.0.1"}
        self.start("transformer", ETL_OPS_PORT=str(ports["transformer"]), **ops)
        self.start("saver", ETL_OPS_PORT=str(ports["saver"]), **ops)
        self.start("extractor", ETL_OPS_PORT=str(ports["extractor"]), ETL_RUN_ON_START="true", **ops)
        self.start("api", ETL_API_PORT=str(ports["api"]), ETL_API_HOST="127.0.0.1")
        return ports

    def start_workers(self, **overrides: str) -> None:
        self.start("transformer", **overrides)
        self.start("saver", **overrides)

    def extract(self, timeout_s: float = 60, **overrides: str) -> subprocess.CompletedProcess:
        env = {k: v for k, v in tb.os.environ.items() if not k.startswith("ETL_")} | self.env(**overrides)
        self.logdir.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [tb.PYTHON, "-m", "extractor", "once"],
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            cwd=self.logdir,
        )

    def stop_all(self) -> None:
        self.stack.close()

    def db(self) -> sqlite3.Connection:
        return tb.reader(self.database)

    def runs(self) -> list[sqlite3.Row]:
        return tb.runs(self.database)

    def wait_run(
        self, statuses: tuple[str, ...] = ("succeeded",), timeout_s: float = 60, run_id: str | None = None
    ) -> sqlite3.Row:
        """Wait until the (latest or given) run reaches one of ``statuses``; fail with the logs otherwise."""
        return tb.wait_for_run(self.database, statuses, timeout_s, run_id=run_id, logs=self.logs)

    def logs(self) -> str:
        """The tail of every service's output, for failure messages."""
        return self.stack.logs(3000)

    def count(self, table: str, run_id: str) -> int:
        with self.db() as conn:
            return conn.execute(f"SELECT count(*) FROM {table} WHERE run_id=?", (run_id,)).fetchone()[0]

    def user_ids(self, table: str, run_id: str) -> list[int]:
        with self.db() as conn:
            return [
                r[0]
                for r in conn.execute(f"SELECT user_id FROM {table} WHERE run_id=? ORDER BY page, position", (run_id,))
            ]

    def checkpoint(self) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.redis.hgetall(self.keys.checkpoint).items()}


def lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line]


@dataclass
class Stack:
    """A pipeline whose runs the services loaded, and the API processes over its database.

    A module defines a ``stack`` fixture returning one; ``pipeline``, ``runs`` and ``api`` below read it.
    """

    pipeline: Any
    runs: list[Any]
    api: Any
    apis: dict[str, Any] = field(default_factory=dict)
