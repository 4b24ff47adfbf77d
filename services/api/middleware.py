"""Request metrics and a server span per API request, labelled by route template (never the raw path)."""

import time

from fastapi import FastAPI
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from etl_common import metrics

tracer = trace.get_tracer("api")

UNMATCHED = "<unmatched>"


class ObservabilityMiddleware:
    """Plain ASGI (not BaseHTTPMiddleware): no extra task per request, streaming untouched."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        status = 500  # what the client gets when the app raises before answering
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}

        async def send_status(message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        started = time.perf_counter()
        with tracer.start_as_current_span(
            f"{method} request", context=propagate.extract(headers), kind=SpanKind.SERVER
        ) as span:
            try:
                await self.app(scope, receive, send_status)
            finally:
                # The router stores the matched route in the scope; its path is the template.
                route = getattr(scope.get("route"), "path", None) or UNMATCHED
                elapsed = time.perf_counter() - started
                span.update_name(f"{method} {route}")
                span.set_attribute("http.request.method", method)
                span.set_attribute("http.route", route)
                span.set_attribute("http.response.status_code", status)
                if status >= 500:
                    span.set_status(Status(StatusCode.ERROR))
                metrics.API_REQUESTS.labels(method=method, route=route, status=str(status)).inc()
                metrics.API_DURATION.labels(method=method, route=route).observe(elapsed)


def install_observability(app: FastAPI) -> None:
    """Outermost middleware, so the time measured includes every other middleware."""
    app.add_middleware(ObservabilityMiddleware)
