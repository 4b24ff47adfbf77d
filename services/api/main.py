"""Builds the FastAPI application: state, error handlers, CORS, the routers and the web console."""

import os

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.telemetry import TelemetryConfig
from fastapi_offline import FastAPIOffline

from api import errors, openapi, ui
from api.cache import ResponseCache
from api.commands import CommandQueue
from api.db import Database
from api.deps import QueryCheckDep, get_settings
from api.middleware import install_observability
from api.routes import data, deadletters, health, retention, runs, schema, sql, summary
from api.settings import ApiSettings
from etl_common import __version__

DOCS_ASSETS = "/docs-assets"
DESCRIPTION = """Read API over the ETL's SQLite file (opened read-only) for the frontend.

Data and command routes need `Authorization: Bearer <ETL_API_TOKEN>` unless `ETL_API_AUTH=none`;
operator routes (dead-letter replay and drop, retention on demand) need `ETL_API_OPERATOR_TOKEN`;
health, readiness, metrics and these docs are open. Errors are `{"detail": ...}`."""


def _telemetry() -> TelemetryConfig:
    """FastAPI's own OpenTelemetry: the request span only, and only when traces are exported.

    Spans that go nowhere, and per-dependency/endpoint/serialisation spans, cost more CPU per
    request than the routes themselves; Prometheus (the middleware) and structlog cover the rest.
    """
    exported = any(os.environ.get(v) for v in ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
    return {"tracing": exported, "operation_spans": False, "metrics": False, "logs": False}


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    """The API over ``settings.database()`` (default: ``get_settings()``); opens nothing until the first request."""
    settings = settings or get_settings()
    # Swagger UI and ReDoc from assets shipped in the fastapi-offline wheel (pinned): no CDN, /docs works offline.
    app: FastAPI = FastAPIOffline(
        title="ETL users API",
        version=__version__,
        description=DESCRIPTION,
        telemetry=_telemetry(),
        static_url=DOCS_ASSETS,
        # No validator badge: Swagger UI would send the document to an outside validator.
        swagger_ui_parameters={"validatorUrl": None},
        # Every route: a query parameter it does not declare is a 422 naming it, never silently ignored.
        dependencies=[QueryCheckDep],
    )
    app.state.settings = settings
    app.state.db = Database(settings.database())
    app.state.commands = CommandQueue(
        settings.redis_url, settings.key_prefix, settings.api_redis_timeout_s, settings.run_claim_ttl_s
    )
    errors.install(app)
    # Innermost middleware: CORS and metrics (added after it) wrap cached answers too.
    app.add_middleware(ResponseCache, settings=settings, db=app.state.db)
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            # Credentials (the bearer token) are never allowed together with a wildcard origin.
            CORSMiddleware,
            allow_origins=origins,
            allow_credentials="*" not in origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
            # Content-Disposition: the browser code of an export reads the file name from it.
            expose_headers=["X-Total-Count", "Content-Disposition"],
            max_age=600,
        )
    install_observability(app)
    for module in (health, runs, schema, data, summary, sql, deadletters, retention):
        app.include_router(module.router)
    ui.install(app)
    openapi.install(app)
    return app
