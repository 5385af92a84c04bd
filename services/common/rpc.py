"""RPC calls with a deadline: nameko's clients otherwise wait forever for a reply."""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.exceptions import UnknownService

from services.common.errors import Unavailable

DEFAULT_TIMEOUT = 10.0


def call(method: Any, *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Any:
    """`call(self.catalog.get_item, code)`: the result, or Unavailable after `timeout` seconds."""
    try:
        reply = method.call_async(*args, **kwargs)
        with eventlet.Timeout(timeout, Unavailable(f"{_name(method)} did not answer in {timeout:g}s")):
            return reply.result()
    except UnknownService as exc:
        raise Unavailable(f"service not running: {exc}") from None


def _name(method: Any) -> str:
    return f"{getattr(method, 'service_name', '?')}.{getattr(method, 'method_name', '?')}"
