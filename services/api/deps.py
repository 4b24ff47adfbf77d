"""Request dependencies: settings, a read-only database connection per thread, authentication."""

import secrets
import sqlite3
import threading
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Header, HTTPException

from api.settings import ApiSettings
from etl_common.db import connect_reader


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()


SettingsDep = Annotated[ApiSettings, Depends(get_settings)]

_local = threading.local()


def get_db(settings: SettingsDep) -> sqlite3.Connection:
    """This thread's read-only connection; 503 while the saver has not created the database."""
    conn = getattr(_local, "conn", None)
    if conn is None:
        if not Path(settings.db_path).exists():
            raise HTTPException(503, "the database does not exist yet; no run has been loaded")
        try:
            conn = connect_reader(settings.db_path)
            conn.execute("SELECT 1 FROM etl_runs LIMIT 0")
        except sqlite3.Error as exc:
            raise HTTPException(503, "the database is not ready") from exc
        _local.conn = conn
    return conn


DbDep = Annotated[sqlite3.Connection, Depends(get_db)]


def require_token(settings: SettingsDep, authorization: Annotated[str | None, Header()] = None) -> None:
    """Bearer-token check (constant time) unless authentication is turned off."""
    if settings.api_auth == "none":
        return
    expected = settings.api_token.get_secret_value() if settings.api_token else ""
    scheme, _, token = (authorization or "").partition(" ")
    if not expected or scheme.lower() != "bearer" or not secrets.compare_digest(token.encode(), expected.encode()):
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


AuthDep = Depends(require_token)
