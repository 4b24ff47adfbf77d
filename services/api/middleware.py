"""Prometheus metrics of every API request, labelled by route template (never the raw path).

Request spans need nothing here: FastAPI traces requests itself (server span continuing the
caller's ``traceparent``, then dependency, endpoint and serialisation spans) once ``python -m api``
has installed the tracer provider.
"""

import time

from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from etl_common import metrics

UNMATCHED = "<unmatched>"


class MetricsMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware): no extra task per request, streaming untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets when the app raises before answering

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        try:
            await self.app(scope, receive, send_status)
        finally:
            # The router stores the matched route in the scope; its path is the template.
            route = getattr(scope.get("route"), "path", None) or UNMATCHED
            method = scope["method"]
            metrics.API_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
            elapsed = time.perf_counter() - started
            metrics.API_DURATION.labels(method=method, route=route).observe(elapsed)


def install_observability(app: FastAPI) -> None:
    """Outermost middleware, so the time measured includes every other middleware; /metrics shows the API's families."""
    metrics.register(metrics.API)
    app.add_middleware(MetricsMiddleware)
