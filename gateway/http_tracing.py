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


class BodyUnreadHttpAdapter(HttpEntrypointAdapter):
    def get_attributes(self, worker_ctx: Any) -> dict[str, Any]:
        attributes = EntrypointAdapter.get_attributes(self, worker_ctx)
        for unsent in ("call_args", "call_args_redacted", "call_args_truncated"):
            attributes.pop(unsent, None)
        attributes.update(wsgi.collect_request_attributes(self.request(worker_ctx).environ))
        return attributes
