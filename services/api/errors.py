"""Error answers: always JSON ``{"detail": ...}`` with the right status, never a trace or SQL internals."""

import sqlite3

import structlog
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from api.db import NotReady

log = structlog.get_logger(__name__)


async def _not_ready(_request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=503, headers={"Retry-After": "5"})


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    # Busy or I/O trouble of the moment: worth a retry; the detail stays generic on purpose.
    log.warning("database error", path=request.url.path, error=str(exc))
    return JSONResponse(
        {"detail": "the database could not be read; try again"}, status_code=503, headers={"Retry-After": "1"}
    )


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    log.error("unexpected error", path=request.url.path, exc_info=exc)
    return JSONResponse({"detail": "internal error"}, status_code=500)


def install(app: FastAPI) -> None:
    """Answer NotReady with 503 (Retry-After 5), other SQLite errors with 503 (Retry-After 1), anything else 500."""
    app.add_exception_handler(NotReady, _not_ready)
    app.add_exception_handler(sqlite3.Error, _database_error)
    app.add_exception_handler(Exception, _unexpected)
