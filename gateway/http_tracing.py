"""How the gateway's HTTP entrypoint is traced: nameko-opentelemetry's adapter, minus its read of
the request body.

That adapter reads `request.data or request.form` as the span starts, for a payload attribute,
even when payloads are not sent (ours are not). It starts before the route checks the token or
the body's size, so any client could make the gateway hold a body of any size in memory, and an
upload was parsed (and spooled to disk) whole before its 10 MiB limit was set. This adapter
gives the span the same attributes without touching the body; the route reads it, bounded.
"""

from __future__ import annotations

from typing import Any

from nameko_opentelemetry.entrypoints import EntrypointAdapter
from nameko_opentelemetry.http import HttpEntrypointAdapter
from opentelemetry.instrumentation import wsgi
from opentelemetry.instrumentation.utils import http_status_to_status_code
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import Status


class BodyUnreadHttpAdapter(HttpEntrypointAdapter):
    def get_attributes(self, worker_ctx: Any) -> dict[str, Any]:
        attributes = EntrypointAdapter.get_attributes(self, worker_ctx)
        for unsent in ("call_args", "call_args_redacted", "call_args_truncated"):
            attributes.pop(unsent, None)
        attributes.update(wsgi.collect_request_attributes(self.request(worker_ctx).environ))
        return attributes

    def get_status(self, worker_ctx: Any, result: Any, exc_info: Any) -> Status:
        """A server span, judged as one: a 4xx is the client's (401, 404, 422, 429 answer a request
        as the contract says) and leaves the span unset; a 5xx is ours, an error. The library
        judged it as a client span, so every refusal looked like a failure of ours."""
        if exc_info:
            return super().get_status(worker_ctx, result, exc_info)
        code = self.get_result_attributes(worker_ctx, result)[SpanAttributes.HTTP_STATUS_CODE]
        return Status(http_status_to_status_code(code, server_span=True))
