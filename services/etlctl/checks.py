"""``etl check``: can this machine reach Redis, the source, SFTP, the database and the API, one line each."""

import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import asdict, dataclass
from typing import Any

import httpx
import redis

from etl_common.db import connect_reader
from etl_common.keys import Keys


@dataclass
class Check:
    """One dependency: reached or not, what was seen, how long it took."""

    name: str
    ok: bool
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


def run_checks(api_url: str, timeout_s: float = 5.0) -> list[Check]:
    """Each dependency as the services' settings (environment, ``.env``) name it, and the API at ``api_url``."""
    from extractor.settings import ExtractorSettings  # the services' own settings, read as they read them
    from saver.settings import SaverSettings

    checks: list[Check] = []
    try:
        saver, source_url = SaverSettings(), ExtractorSettings().source_url
    except Exception as exc:
        return [Check("settings", False, f"{type(exc).__name__}: {exc}", 0.0)]

    def ping_redis() -> str:
        client = redis.Redis.from_url(saver.redis_url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
        with closing(client):
            client.ping()
            dead = client.xlen(Keys(saver.key_prefix).dead_stream)
            return f"{_safe(saver.redis_url)} answers PING; {dead} dead letters"

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
        with closing(connect_reader(saver.db_path)) as conn:
            runs = conn.execute("SELECT count(*) FROM etl_runs").fetchone()[0]
            version = conn.execute("SELECT max(version) FROM schema_migrations").fetchone()[0]
        return f"{saver.db_path}: {runs} runs, schema version {version}"

    def get_api() -> str:
        resp = httpx.get(api_url.rstrip("/") + "/readyz", timeout=timeout_s)
        if resp.status_code != 200:
            raise RuntimeError(f"{api_url}/readyz answers {resp.status_code}: {resp.text[:200]}")
        return f"{api_url} is ready"

    for name, probe in (
        ("redis", ping_redis),
        ("source", get_source),
        ("sftp", open_sftp),
        ("database", read_db),
        ("api", get_api),
    ):
        checks.append(_timed(name, probe))
    return checks


def _safe(url: str) -> str:
    """A Redis URL without its password."""
    parts = httpx.URL(url)
    return str(parts.copy_with(password=None)) if parts.password else url
