"""Tracing set-up shared by every process: one TracerProvider, nameko and pymongo instrumented.

Exporters are chosen by environment: OTLP over HTTP when OTEL_EXPORTER_OTLP_ENDPOINT is set,
and JSON-lines files `<YIWANG_SPAN_DIR>/<service>.jsonl` when that is set (end-to-end tests read them). Spans are
always batched: a SimpleSpanProcessor costs about a millisecond per span.
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
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

_lock = threading.Lock()
_configured_for: str | None = None

# Our entrypoint subclasses, traced like the nameko classes they extend.
ENTRYPOINT_ADAPTERS = {
    "services.common.consuming.ReliableEventHandler": "nameko_opentelemetry.events.EventHandlerEntrypointAdapter",
    "gateway.routing.ApiRoute": "nameko_opentelemetry.http.HttpEntrypointAdapter",
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


def configure_tracing(service_name: str) -> None:
    """Idempotent per process; the first service name wins (one service per process)."""
    global _configured_for
    with _lock:
        if _configured_for is not None:
            return
        _configured_for = service_name
        provider = TracerProvider(resource=Resource.create({"service.name": f"yiwang-{service_name}"}))
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
        span_dir = os.environ.get("YIWANG_SPAN_DIR")
        if span_dir:
            path = os.path.join(span_dir, f"{service_name}.jsonl")
            provider.add_span_processor(BatchSpanProcessor(JsonLinesSpanExporter(path), schedule_delay_millis=200))
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


def annotate(**attributes: Any) -> None:
    """Put domain attributes (case_no, item_code, ...) on the current span; never personal data."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes({k: v for k, v in attributes.items() if v is not None})
