"""Entry point: ``python -m api`` serves the API with uvicorn (``ETL_API_WORKERS`` processes)."""

import socket
import sys

import uvicorn
from fastapi import FastAPI

from api.deps import get_settings
from api.main import create_app
from api.settings import ApiSettings
from etl_common import logs, tracing
from etl_common.settings import load


def worker_app() -> FastAPI:
    """The app of one worker process: each configures its own logs and traces."""
    settings = get_settings()
    logs.configure("api", settings.log_level, settings.log_format)
    tracing.configure("api")
    return create_app(settings)


def _port_free(host: str, port: int) -> OSError | None:
    """None when ``host:port`` can be bound now, else the bind error (the port is taken, or not ours)."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
            s.bind((host, port))
    except OSError as exc:
        return exc
    return None


def main() -> int:
    """Serve until stopped (exit status 0); 2 with one line on stderr for a bad setting, a missing
    ``ETL_API_TOKEN`` (token auth on) or a port that cannot be bound."""
    settings = load(ApiSettings)
    if settings.api_auth == "token" and not settings.api_token:
        print("ETL_API_TOKEN is required (or set ETL_API_AUTH=none for local use)", file=sys.stderr)
        return 2
    busy = _port_free(settings.api_host, settings.api_port)
    if busy is not None:
        print(
            f"api: cannot listen on {settings.api_host}:{settings.api_port} ({busy.strerror}); "
            "choose another port with ETL_API_PORT",
            file=sys.stderr,
        )
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
