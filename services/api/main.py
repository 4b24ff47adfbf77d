"""Builds the FastAPI application and includes the routers."""

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api.deps import get_settings
from api.middleware import install_observability
from api.routes import health, runs
from etl_common import __version__


def create_app() -> FastAPI:
    settings = get_settings()
    app = FastAPI(title="ETL users API", version=__version__, description="Read API over the ETL's SQLite file.")
    origins = [o.strip() for o in settings.api_cors_origins.split(",") if o.strip()]
    if origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=origins, allow_credentials="*" not in origins,
            allow_methods=["GET", "POST"], allow_headers=["Authorization", "Content-Type"],
            expose_headers=["X-Total-Count"],
        )
    install_observability(app)
    app.include_router(health.router)
    app.include_router(runs.router)
    return app
