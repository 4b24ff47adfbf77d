"""Error answers: always JSON ``{"detail": ...}`` with the right status, never a trace or SQL internals."""

import math
import re
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from api.db import NotReady
from api.models import NO_CONTROL_MESSAGE
from etl_common.jsontext import BAD_UNICODE

# How much of a refused input a 422 echoes back: enough to see the mistake, never a whole hostile body.
_ECHO_DEPTH, _ECHO_ITEMS, _ECHO_CHARS = 4, 20, 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

log = structlog.get_logger(__name__)


async def _not_ready(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Busy or I/O trouble of the moment: worth a retry; the detail stays generic on purpose.
    log.warning("database error", path=request.url.path, error=str(exc))
    return JSONResponse(
        {"detail": "the database could not be read; try again"}, status_code=503, headers={"Retry-After": "1"}
    )


def _echo(value: Any, depth: int = 0) -> Any:
    """``value`` made writable as strict JSON: lone surrogates as U+FFFD, NaN/Infinity as text, bounded size."""
    if isinstance(value, str):
        return BAD_UNICODE.sub("\ufffd", value[:_ECHO_CHARS])
    if isinstance(value, bool) or value is None or isinstance(value, int):
        return value if not isinstance(value, int) or abs(value) < 2**63 else str(value)[:_ECHO_CHARS]
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if depth >= _ECHO_DEPTH:
        return "..."
    if isinstance(value, dict):
        return {_echo(str(k)): _echo(v, depth + 1) for k, v in list(value.items())[:_ECHO_ITEMS]}
    if isinstance(value, (list, tuple)):
        return [_echo(v, depth + 1) for v in list(value)[:_ECHO_ITEMS]]
    return _echo(str(value))


def _message(error: Any) -> str:
    """The error's message; the pattern of free text (no control characters) said in words."""
    value = error.get("input")
    if error.get("type") == "string_pattern_mismatch" and isinstance(value, str) and _CONTROL.search(value):
        return NO_CONTROL_MESSAGE
    return str(error.get("msg", ""))


async def _invalid_request(_request: Request, exc: Exception) -> JSONResponse:
    # FastAPI's own handler echoes the input as it came: a lone surrogate or a NaN in it made the 422 a 500.
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = [
        {
            "type": _echo(e.get("type", "")),
            "loc": [_echo(part) for part in e.get("loc", ())],
            "msg": _echo(_message(e)),
            "input": _echo(e.get("input")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


async def _not_unicode(request: Request, exc: Exception) -> JSONResponse:
    # Text with a lone surrogate reached a place that needs UTF-8 (SQLite, a header): the request is at fault.
    log.warning("request text is not valid Unicode", path=request.url.path)
    return JSONResponse({"detail": "the request holds text that is not valid Unicode (a lone surrogate)"}, 400)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", path=request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    """Every error answer: 422 without echoing bad text, 400 for text that is not Unicode, 503 for NotReady
    (Retry-After 5) and other database errors (Retry-After 1), 500 for anything else."""
    app.add_exception_handler(RequestValidationError, _invalid_request)
    app.add_exception_handler(UnicodeError, _not_unicode)
    app.add_exception_handler(NotReady, _not_ready)
    for database_error in app.state.db.errors:
        app.add_exception_handler(database_error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
