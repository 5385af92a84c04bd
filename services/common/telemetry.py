"""Tracing set-up shared by every process: one TracerProvider, nameko and pymongo instrumented.

Exporters follow OpenTelemetry's standard selection, `OTEL_TRACES_EXPORTER` (comma-separated):
`zipkin` (the local viewer, `OTEL_EXPORTER_ZIPKIN_ENDPOINT`), `otlp` (OTLP over HTTP, e.g. to
Jaeger; also chosen when only `OTEL_EXPORTER_OTLP_ENDPOINT` is set), `console`, `none`. Besides,
`YIWANG_SPAN_DIR` writes JSON-lines files `<dir>/<service>.jsonl` (the end-to-end tests read them).
`YIWANG_TRACING=off` turns tracing off altogether (the tracing-cost benchmark compares).
Spans are always batched (a SimpleSpanProcessor costs about a millisecond per span), and every
exporter sees them scrubbed: attribute values, event attributes and status descriptions pass
through the same masking as log lines, whatever instrumentation put them there.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from nameko.extensions import DependencyProvider
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter, SpanExportResult
from opentelemetry.trace import Status
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from services.common.logs import scrub

_lock = threading.Lock()
_configured_for: str | None = None

# Our entrypoint subclasses, traced like the nameko classes they extend.
ENTRYPOINT_ADAPTERS = {
    "services.common.consuming.ReliableEventHandler": "nameko_opentelemetry.events.EventHandlerEntrypointAdapter",
    "gateway.routing.ApiRoute": "gateway.http_tracing.BodyUnreadHttpAdapter",
}


class JsonLinesSpanExporter(SpanExporter):
    """Appends finished spans to a file, one JSON object a line (for tests and quick looks)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            ctx = span.get_span_context()
            lines.append(
                json.dumps(
                    {
                        "trace_id": format(ctx.trace_id, "032x"),
                        "span_id": format(ctx.span_id, "016x"),
                        "parent_span_id": format(span.parent.span_id, "016x") if span.parent else None,
                        "name": span.name,
                        "kind": span.kind.name,
                        "service": span.resource.attributes.get("service.name"),
                        "status": span.status.status_code.name,
                        "attributes": {k: _plain(v) for k, v in (span.attributes or {}).items()},
                    },
                    ensure_ascii=False,
                )
            )
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write("\n".join(lines) + "\n")
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


class ScrubbingSpanExporter(SpanExporter):
    """Hands the wrapped exporter copies of the spans with personal data masked."""

    def __init__(self, inner: SpanExporter) -> None:
        self.inner = inner

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return self.inner.export([scrubbed(span) for span in spans])

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


def scrubbed(span: ReadableSpan) -> ReadableSpan:
    status = span.status
    if status.description:
        status = Status(status.status_code, scrub(status.description))
    return ReadableSpan(
        name=span.name,
        context=span.context,
        parent=span.parent,
        resource=span.resource,
        attributes=_scrub_attributes(span.attributes),
        events=[Event(e.name, _scrub_attributes(e.attributes), e.timestamp) for e in span.events],
        links=span.links,
        kind=span.kind,
        status=status,
        start_time=span.start_time,
        end_time=span.end_time,
        instrumentation_scope=span.instrumentation_scope,
    )


def _scrub_attributes(attributes: Any) -> dict[str, Any]:
    def clean(value: Any) -> Any:
        if isinstance(value, str):
            return scrub(value)
        if isinstance(value, tuple | list):
            return tuple(clean(v) for v in value)
        return value

    return {key: clean(value) for key, value in (attributes or {}).items()}


def _exporters(service_name: str) -> list[tuple[SpanExporter, int]]:
    """(exporter, batch delay in ms) for what the environment asks for."""
    chosen = os.environ.get("OTEL_TRACES_EXPORTER")
    if chosen is None:
        chosen = "otlp" if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") else "none"
    exporters: list[tuple[SpanExporter, int]] = []
    for name in filter(None, (n.strip() for n in chosen.split(","))):
        if name == "zipkin":
            from opentelemetry.exporter.zipkin.json import ZipkinExporter

            exporters.append((ZipkinExporter(), 1000))
        elif name == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporters.append((OTLPSpanExporter(), 1000))
        elif name == "console":
            exporters.append((ConsoleSpanExporter(), 1000))
        elif name != "none":
            raise ValueError(f"OTEL_TRACES_EXPORTER: unknown exporter {name!r} (zipkin, otlp, console, none)")
    span_dir = os.environ.get("YIWANG_SPAN_DIR")
    if span_dir:
        exporters.append((JsonLinesSpanExporter(os.path.join(span_dir, f"{service_name}.jsonl")), 200))
    return exporters


def tracing_enabled() -> bool:
    return os.environ.get("YIWANG_TRACING", "on").lower() not in ("off", "0", "false", "no")


def configure_tracing(service_name: str) -> None:
    """Idempotent per process; the first service name wins (one service per process)."""
    global _configured_for
    with _lock:
        if _configured_for is not None:
            return
        _configured_for = service_name
        if not tracing_enabled():
            return  # the API's no-op tracer: no spans, no instrumentation
        provider = TracerProvider(resource=Resource.create({"service.name": f"yiwang-{service_name}"}))
        for exporter, delay in _exporters(service_name):
            provider.add_span_processor(
                BatchSpanProcessor(ScrubbingSpanExporter(exporter), schedule_delay_millis=delay)
            )
        trace.set_tracer_provider(provider)

        from nameko_opentelemetry import NamekoInstrumentor
        from opentelemetry.instrumentation.pymongo import PymongoInstrumentor

        NamekoInstrumentor().instrument(entrypoint_adapters=ENTRYPOINT_ADAPTERS)
        PymongoInstrumentor().instrument()


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


class Tracing(DependencyProvider):
    """Declare once per service class: sets tracing up before any worker runs, flushes on stop."""

    def setup(self) -> None:
        configure_tracing(self.container.service_name)

    def stop(self) -> None:
        provider = trace.get_tracer_provider()
        if hasattr(provider, "force_flush"):
            provider.force_flush(timeout_millis=5000)


def current_trace_id() -> str:
    ctx = trace.get_current_span().get_span_context()
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""


def current_traceparent() -> str | None:
    """The current span as a W3C `traceparent`, to store with work that another worker does later."""
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get("traceparent")


def continued(traceparent: str | None, name: str, kind: trace.SpanKind = trace.SpanKind.INTERNAL) -> Any:
    """A span that continues the trace a stored `traceparent` belongs to (later, asynchronous work
    of a request shows up in the request's trace); a fresh trace without one."""
    context = TraceContextTextMapPropagator().extract({"traceparent": traceparent} if traceparent else {})
    return trace.get_tracer("yiwang").start_as_current_span(name, context=context, kind=kind)


def client_span(name: str, **attributes: Any) -> Any:
    """A span around an outbound call (SMTP, the SMS provider)."""
    return trace.get_tracer("yiwang").start_as_current_span(
        name, kind=trace.SpanKind.CLIENT, attributes={k: v for k, v in attributes.items() if v is not None}
    )


def annotate(**attributes: Any) -> None:
    """Put domain attributes (case_no, item_code, ...) on the current span; never personal data."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
