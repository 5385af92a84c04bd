"""RPC calls with a deadline: nameko's clients otherwise wait forever for a reply."""

from __future__ import annotations

from typing import Any

import eventlet
from nameko.exceptions import UnknownService
from nameko.rpc import ReplyListener
from nameko.rpc import ServiceRpc as NamekoServiceRpc

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


class StartupSafeReplyListener(ReplyListener):
    """nameko's reply listener checks, on every connection, that its reply queue still exists when
    replies are pending. On the very first connection the queue cannot exist yet, and a request
    that arrives while the process is starting (a health probe) makes that check kill the whole
    container. Skip it the first time; keep it for reconnections, where it means lost replies."""

    def setup(self) -> None:
        super().setup()
        self._connected_before = False

    def check_for_lost_replies(self) -> None:
        if not self._connected_before:
            self._connected_before = True
            return
        super().check_for_lost_replies()


class ServiceRpc(NamekoServiceRpc):
    """`ServiceRpc` with the startup-safe reply listener; use it instead of nameko's."""

    reply_listener = StartupSafeReplyListener()
