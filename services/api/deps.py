"""Request dependencies: settings, the database, bearer-token authentication, and the JSON answer helper.

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its thread
pool, and a thread hop per dependency costs more than the work they do.
"""

import secrets
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import Depends, HTTPException, Request, Response

from api.db import Database
from api.models import Error
from api.settings import ApiSettings


@lru_cache
def get_settings() -> ApiSettings:
    """The settings from the environment and ``.env``, read once per process (pydantic ValidationError if invalid)."""
    return ApiSettings()


async def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


async def _database(request: Request) -> Database:
    db: Database = request.app.state.db
    return db


SettingsDep = Annotated[ApiSettings, Depends(_settings)]
DbDep = Annotated[Database, Depends(_database)]


def token_ok(settings: ApiSettings, authorization: str | None) -> bool:
    """Whether an Authorization header carries the bearer token (constant-time compare), or auth is off."""
    if settings.api_auth == "none":
        return True
    expected = settings.api_token.get_secret_value().encode() if settings.api_token else b""
    scheme, _, token = (authorization or "").partition(" ")
    return bool(expected) and scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), expected)


async def require_token(request: Request) -> None:
    """The bearer-token check of every data and command route.

    Reads the header itself rather than through ``HTTPBearer`` and the settings dependency: each
    dependency costs FastAPI measurable time per request. The OpenAPI document still declares
    the scheme (see ``api.openapi``).
    """
    if not token_ok(request.app.state.settings, request.headers.get("authorization")):
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})


AuthDep = Depends(require_token)


def error(status: int, description: str) -> dict[int | str, dict[str, Any]]:
    """An error answer for the OpenAPI document: ``{"detail": ...}``."""
    return {status: {"model": Error, "description": description}}


AUTH_ERRORS = {**error(401, "Missing or invalid bearer token"), **error(503, "The database does not exist yet")}


def json_response(content: Any, status_code: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A JSON answer of ``content`` serialised with orjson (datetimes as RFC 3339), without FastAPI's encoder."""
    return Response(orjson.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def raw_json(body: bytes, headers: dict[str, str] | None = None) -> Response:
    """A 200 JSON answer of ``body``, already serialised (a cached answer is sent as it is)."""
    return Response(body, headers=headers, media_type="application/json")


async def require_operator(request: Request) -> None:
    """The operator check (dead-letter replay and drop, retention on demand): ``ETL_API_OPERATOR_TOKEN``.

    401 without a valid token of either kind, 403 with the read token (or when no operator token is set).
    """
    settings: ApiSettings = request.app.state.settings
    if settings.api_auth == "none":
        return
    header = request.headers.get("authorization")
    operator = settings.api_operator_token.get_secret_value().encode() if settings.api_operator_token else b""
    scheme, _, token = (header or "").partition(" ")
    if operator and scheme.lower() == "bearer" and secrets.compare_digest(token.strip().encode(), operator):
        return
    if not token_ok(settings, header):
        raise HTTPException(401, "missing or invalid bearer token", headers={"WWW-Authenticate": "Bearer"})
    why = "this token only reads" if operator else "no operator token is configured (ETL_API_OPERATOR_TOKEN)"
    raise HTTPException(403, f"operator action refused: {why}")


OperatorDep = Depends(require_operator)
