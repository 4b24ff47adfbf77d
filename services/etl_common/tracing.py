"""OpenTelemetry set-up and W3C trace-context carriage through stream entries."""

import os

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from etl_common import __version__


def configure(service: str, exporter: SpanExporter | None = None) -> TracerProvider:
    """Install a tracer provider; export over OTLP only when an endpoint is configured."""
    provider = TracerProvider(resource=Resource.create({"service.name": service, "service.version": __version__}))
    if exporter is None and (
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    ):
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def current_traceparent() -> str | None:
    """The W3C traceparent of the current span, to put in an outgoing entry."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return carrier.get("traceparent")


def context_from(traceparent: str | None) -> Context | None:
    """The context an incoming entry carries, to parent this stage's span."""
    if not traceparent:
        return None
    return propagate.extract({"traceparent": traceparent})


def trace_id_of(traceparent: str | None) -> str | None:
    """The trace id a W3C traceparent names (``00-<trace id>-<span id>-<flags>``), for log lines."""
    parts = (traceparent or "").split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else None


def trace_id_hex(span: trace.Span) -> str | None:
    """The trace id of ``span`` as logs and trace back-ends print it; None when not recording."""
    ctx = span.get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else None
