"""Request dependencies: settings, the database, bearer-token authentication, query checks, run keys, JSON answers.

Dependencies are ``async def`` on purpose: FastAPI runs plain ``def`` dependencies in its thread
pool, and a thread hop per dependency costs more than the work they do.
"""

import difflib
import secrets
from functools import lru_cache
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError

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


def _declared_queries(app: FastAPI) -> dict[tuple[str, str], frozenset[str]]:
    """(method, path template) -> the query parameters the route declares in the OpenAPI document; built once."""
    declared: dict[tuple[str, str], frozenset[str]] | None = getattr(app.state, "declared_queries", None)
    if declared is None:
        declared = {
            (method.upper(), path): frozenset(p["name"] for p in op.get("parameters", []) if p.get("in") == "query")
            for path, ops in app.openapi().get("paths", {}).items()
            for method, op in ops.items()
            if isinstance(op, dict)
        }
        app.state.declared_queries = declared
    return declared


async def reject_unknown_query(request: Request) -> None:
    """422 naming each query parameter the route does not declare (a misspelt or unsupported filter).

    Ignoring it would answer as if there were no filter: every row, every run. The declared names are
    the OpenAPI document's, so what the document says and what the API takes cannot drift apart; a route
    outside the document (/metrics) takes none.
    """
    if not request.scope.get("query_string"):
        return
    route = request.scope.get("route")
    method = "GET" if request.method == "HEAD" else request.method
    allowed = _declared_queries(request.app).get((method, getattr(route, "path_format", "")), frozenset())
    unknown = [name for name in dict.fromkeys(request.query_params.keys()) if name not in allowed]
    if not unknown:
        return
    takes = f"this route takes {', '.join(sorted(allowed))}" if allowed else "this route takes no query parameters"
    errors = []
    for name in unknown:
        close = difflib.get_close_matches(name, sorted(allowed), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        msg = f"unknown query parameter {name!r}{hint}; {takes}"
        errors.append(
            {"type": "unknown_parameter", "loc": ("query", name), "msg": msg, "input": request.query_params[name]}
        )
    raise RequestValidationError(errors)


QueryCheckDep = Depends(reject_unknown_query)


def run_key(run: str) -> tuple[str, int | str]:
    """The column and value a run is looked up by: the integer ``id``, or the ``run_id`` text."""
    # isascii: "³".isdigit() is true, and int() refuses it.
    if run.isascii() and run.isdigit() and len(run) < 19:
        return "id", int(run)
    return "run_id", run


def run_id_of(db: Database, run: str) -> str:
    """The ``run_id`` text of a run given in either form (an integer ``id`` that names no run stays as given)."""
    column, key = run_key(run)
    if column == "run_id":
        return run
    found = db.scalar("SELECT run_id FROM etl_runs WHERE id = ?", (key,))
    return str(found) if found is not None else run


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
