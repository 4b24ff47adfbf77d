"""Entry point: ``python -m api`` serves the API with uvicorn (``ETL_API_WORKERS`` processes)."""

import sys

import uvicorn
from fastapi import FastAPI

from api.deps import get_settings
from api.main import create_app
from etl_common import logs, tracing


def worker_app() -> FastAPI:
    """The app of one worker process: each configures its own logs and traces."""
    settings = get_settings()
    logs.configure("api", settings.log_level, settings.log_format)
    tracing.configure("api")
    return create_app(settings)


def main() -> int:
    """Serve until stopped (exit status 0); 2 when token auth is on and ``ETL_API_TOKEN`` is missing."""
    settings = get_settings()
    if settings.api_auth == "token" and not settings.api_token:
        print("ETL_API_TOKEN is required (or set ETL_API_AUTH=none for local use)", file=sys.stderr)
        return 2
    uvicorn.run(
        "api.__main__:worker_app",
        factory=True,
        host=settings.api_host,
        port=settings.api_port,
        workers=settings.api_workers,
        log_config=None,
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
