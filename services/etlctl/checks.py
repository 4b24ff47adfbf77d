"""``etl check``: can this machine reach Redis, the source, SFTP, the database and the API, one line each."""

import importlib
import importlib.util
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis
from pydantic import ValidationError

from etl_common.db import connect_reader, connection_problem
from etl_common.keys import Keys
from etl_common.settings import BaseEtlSettings, describe


@dataclass
class Check:
    """One dependency: reached or not, what was seen, how long it took."""

    name: str
    ok: bool | None  # None: not checked from here (the image lacks the service that knows how)
    detail: str
    ms: float

    def as_dict(self) -> dict[str, Any]:
        """The check as JSON."""
        return asdict(self)


def _timed(name: str, probe: Callable[[], str]) -> Check:
    t0 = time.monotonic()
    try:
        detail, ok = probe(), True
    except Exception as exc:  # any failure is the answer of the check, named
        detail, ok = f"{type(exc).__name__}: {exc}", False
    return Check(name, ok, detail, round((time.monotonic() - t0) * 1000, 1))


def _service_settings(service: str, cls: str) -> Any:
    """The service's own settings class read as it reads them, or None when this installation lacks the service."""
    if importlib.util.find_spec(service) is None:
        return None
    return getattr(importlib.import_module(f"{service}.settings"), cls)()


def _missing(name: str, package: str) -> Check:
    return Check(name, None, f"not checked here: this installation has no {package} package (run it in its pod)", 0.0)


def run_checks(api_url: str, timeout_s: float = 5.0) -> list[Check]:
    """Each dependency as the services' settings (environment, ``.env``) name it, and the API at ``api_url``.

    An image carries one service: the checks that need another's settings say so instead of guessing them.
    """
    try:
        saver = _service_settings("saver", "SaverSettings")
        extractor = _service_settings("extractor", "ExtractorSettings")
        common = saver or BaseEtlSettings()
    except ValidationError as exc:  # pydantic's own text echoes the values given, a URL's password with them
        return [Check("settings", False, describe(exc), 0.0)]
    except Exception as exc:
        return [Check("settings", False, f"{type(exc).__name__}: {exc}", 0.0)]
    source_url: str = extractor.source_url if extractor else ""

    def ping_redis() -> str:
        client = redis.Redis.from_url(common.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        with closing(client):
            client.ping()
            dead = client.xlen(Keys(common.key_prefix).dead_stream)
            return f"{_safe(common.redis_url)} answers PING; {dead} dead letters"

    def get_source() -> str:
        resp = httpx.get(source_url, params={"limit": 1, "select": "id"}, timeout=timeout_s)
        resp.raise_for_status()
        return f"{source_url} answers {resp.status_code}; total {resp.json().get('total')} users"

    def open_sftp() -> str:
        if not saver.sftp_enabled:
            return "not used (ETL_SFTP_ENABLED=false)"
        from saver import sftp

        client = sftp.connect(saver)
        with closing(client):
            session = client.open_sftp()
            session.stat(saver.sftp_remote_dir)
        return (
            f"{saver.sftp_user}@{saver.sftp_host}:{saver.sftp_port} (host key pinned), {saver.sftp_remote_dir}/ found"
        )

    def read_db() -> str:
        # The database the saver uses: ETL_DATABASE_URL's (SQLite or PostgreSQL), else the file ETL_DB_PATH.
        database = saver.database()
        where = database.redacted() if database.engine == "postgresql" else str(database.path)
        try:
            conn = connect_reader(database)
        except Exception as exc:  # the driver's message may hold the password: said in the project's words
            raise ConnectionError(f"{where}: {connection_problem(exc, database)}") from None
        with closing(conn):
            runs = conn.execute("SELECT count(*) FROM etl_runs").fetchone()[0]
            version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        return f"{where}: {runs} runs, schema version {version}"

    def get_api() -> str:
        resp = httpx.get(api_url.rstrip("/") + "/readyz", timeout=timeout_s)
        if resp.status_code != 200:
            raise RuntimeError(f"{api_url}/readyz answers {resp.status_code}: {resp.text[:200]}")
        return f"{api_url} is ready"

    return [
        _timed("redis", ping_redis),
        _timed("source", get_source) if source_url else _missing("source", "extractor"),
        _timed("sftp", open_sftp) if saver else _missing("sftp", "saver"),
        _timed("database", read_db) if saver else _missing("database", "saver"),
        _timed("api", get_api),
    ]


def _safe(url: str) -> str:
    """A Redis URL without its password."""
    parts = httpx.URL(url)
    return str(parts.copy_with(password=None)) if parts.password else url
