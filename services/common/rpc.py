"""RPC calls with a deadline: nameko's clients otherwise wait forever for a reply."""

from __future__ import annotations

import contextlib
import logging
from typing import Any

import amqp.exceptions
import eventlet
import kombu.exceptions
from nameko import config
from nameko.amqp.publish import Publisher
from nameko.constants import AMQP_SSL_CONFIG_KEY, LOGIN_METHOD_CONFIG_KEY
from nameko.exceptions import ReplyQueueExpiredWithPendingReplies, UnknownService
from nameko.rpc import Client, ReplyListener, Responder, RpcConsumer, get_rpc_exchange
from nameko.rpc import Rpc as NamekoRpc
from nameko.rpc import ServiceRpc as NamekoServiceRpc
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode

from services.common.errors import Unavailable
from services.common.mongo import STORE_UNREACHABLE

DEFAULT_TIMEOUT = 10.0
# Seconds a request waits in its queue at most (the broker drops it then). Its caller has given up
# by then, told the service is unavailable: a request a stopped service finds on its return must
# not change a password or withdraw a case minutes after its caller heard it failed.
REQUEST_EXPIRY = DEFAULT_TIMEOUT
PUBLISH_RETRY_POLICY = {"max_retries": 2, "interval_start": 0.1, "interval_step": 0.4, "interval_max": 0.5}
# Seconds a publish waits for the broker's confirm. Without a bound, a broker gone silent (its host
# gone without a reset) held every publisher until TCP gave up, minutes later; past it kombu
# replaces the connection and publishes again (consumers are idempotent), as for one that broke.
CONFIRM_TIMEOUT = 2.0
# Seconds a publisher's new connection may take to connect and shake hands (kombu's default: 5).
CONNECT_TIMEOUT = 2.0
BROKER_GONE = (kombu.exceptions.OperationalError, amqp.exceptions.ConnectionError, OSError)
log = logging.getLogger(__name__)


def call(method: Any, *args: Any, timeout: float = DEFAULT_TIMEOUT, **kwargs: Any) -> Any:
    """`call(self.catalog.get_item, code)`: the result, or Unavailable after `timeout` seconds."""
    caller_span = trace.get_current_span()
    reply = None
    try:
        try:
            reply = method.call_async(*args, **kwargs)
            with eventlet.Timeout(timeout, Unavailable(f"{_name(method)} did not answer in {timeout:g}s")):
                return reply.result()
        except UnknownService as exc:
            raise Unavailable(f"service not running: {exc}") from None
        except BROKER_GONE as exc:
            raise Unavailable(f"the message broker cannot be reached ({type(exc).__name__})") from None
    except BaseException as error:
        _forget_pending(method, reply, error)
        if trace.get_current_span() is not caller_span:
            _end_abandoned_call(reply, error)
        raise


def _forget_pending(method: Any, reply: Any, error: BaseException) -> None:
    """nameko files each call with its reply listener before the request goes out, and unfiles it
    only when the reply comes: a call given up (a timeout, a request that could not be published,
    no such service) stayed filed for the life of the process."""
    listener = getattr(getattr(method, "register_for_reply", None), "__self__", None)
    pending = getattr(listener, "pending", None)
    if not isinstance(pending, dict):
        return
    if reply is not None:
        correlation_id = reply.correlation_id
    else:  # filed, then the request failed: only the frame that filed it knows its id
        correlation_id = _local_of_frame(error, Client._call.__code__, "correlation_id")
    if correlation_id is not None:
        pending.pop(correlation_id, None)


def _end_abandoned_call(reply: Any, error: BaseException) -> None:
    """nameko-opentelemetry starts an RPC's client span, and makes it the current one, as the
    request goes out, and ends it when the reply arrives. A call given up before (a timeout, the
    broker gone, no such service) got neither: the span was never exported, so the trace lacked
    the very call that failed; it stayed the worker's current span, so later spans hung under it;
    and the garbage collector detached it later in some other greenthread ("Failed to detach
    context", logged as an ERROR). End it here, in the greenthread that began it, with the error.
    (A span that is not recorded, its trace sampled out, is given back all the same.)"""
    from nameko_opentelemetry.rpc import active_spans, initiate_call  # present: it made the span

    activation, span = None, trace.get_current_span()
    if reply is not None:
        activation, span = active_spans.pop(reply, (None, span))
    else:
        # The request never went out, so it was never filed: only the frame that began it holds it.
        activation = _local_of_frame(error, initiate_call.__code__, "activation")
    if getattr(span, "end_time", None) is not None:
        return  # ended already: its reply came (and its activation was exited with it)
    if activation is not None:
        # Gives the caller's context back, records the error on the span and marks it failed.
        activation.__exit__(type(error), error, error.__traceback__)
    elif span.is_recording():
        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
    span.end()


def _local_of_frame(error: BaseException, code: Any, name: str) -> Any:
    """A local variable of the frame running `code` that `error` (or an error it was raised from
    or during) passed through; None if none did."""
    seen: BaseException | None = error
    while seen is not None:
        tb = seen.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code is code:
                return tb.tb_frame.f_locals.get(name)
            tb = tb.tb_next
        seen = seen.__cause__ or seen.__context__
    return None


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
        # nameko treats lost replies as fatal and kills the process; the callers waiting for them
        # are told the service is unavailable instead, and the process keeps serving.
        try:
            super().check_for_lost_replies()
        except ReplyQueueExpiredWithPendingReplies:
            log.warning("the reply queue was lost with %d calls waiting; they are told so", len(self.pending))
            for waiting in list(self.pending.values()):
                waiting.send_exception(Unavailable("the message broker lost the reply"))
            self.pending.clear()


class ConfirmBoundedPublisher(Publisher):
    """nameko's publisher, waiting CONFIRM_TIMEOUT at most for each confirm and CONNECT_TIMEOUT
    for a connection. Every publisher of ours is one: RPC requests and replies, events."""

    # Its own connections (kombu pools them by these options too) connect within CONNECT_TIMEOUT.
    transport_options = {**Publisher.transport_options, "connect_timeout": CONNECT_TIMEOUT}

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("confirm_timeout", CONFIRM_TIMEOUT)
        super().__init__(*args, **kwargs)


class BoundedResponder(Responder):
    publisher_cls = ConfirmBoundedPublisher


class DeclareOncePublisher(ConfirmBoundedPublisher):
    """Declares what it was given to declare (the reply queue) with its first message only.

    kombu remembers declaring a queue only when it has no expiry, and nameko's reply queues expire
    when unused, so nameko declared the reply queue, its exchange and its binding (three round
    trips to the broker) before every request. The reply listener declares its queue whenever it
    (re)connects, and replies to a queue that is gone are already told as 'unavailable'."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._first_only, self.declare = self.declare, []
        self._declared = False

    def publish(self, payload: Any, **kwargs: Any) -> Any:
        if self._declared:
            return super().publish(payload, **kwargs)
        kwargs["declare"] = [*kwargs.get("declare", ()), *self._first_only]
        result = super().publish(payload, **kwargs)
        self._declared = True
        return result


class ServiceRpc(NamekoServiceRpc):
    """`ServiceRpc` with the startup-safe reply listener; use it instead of nameko's. A request that
    cannot be published is retried briefly (a stale connection is replaced at once), then given
    up: a caller hears 'unavailable' in about a second instead of after kombu's default retries.
    The reply queue is declared with the first request, not with each (DeclareOncePublisher)."""

    reply_listener = StartupSafeReplyListener()
    publisher_cls = DeclareOncePublisher

    def __init__(self, target_service: str, **options: Any) -> None:
        options.setdefault("retry_policy", PUBLISH_RETRY_POLICY)
        options.setdefault("expiration", REQUEST_EXPIRY)
        super().__init__(target_service, **options)


class ReplySafeRpcConsumer(RpcConsumer):
    """nameko kills the whole service process when a reply cannot be published, which is what
    happens to every call in flight when the broker goes away. Log it instead and hand the request
    back to the broker (on a dead connection it is reclaimed anyway): it is delivered again after
    the reconnection, which is why RPC commands are idempotent (submissions carry a key)."""

    def handle_result(self, message: Any, result: Any, exc_info: Any) -> tuple[Any, Any]:
        if exc_info is not None and isinstance(exc_info[1], STORE_UNREACHABLE):
            # The caller hears 'unavailable, try again' (503), not an internal error.
            gone = Unavailable(f"the service's store cannot be reached ({type(exc_info[1]).__name__})")
            exc_info = (Unavailable, gone, exc_info[2])
        try:
            return self._reply(message, result, exc_info)
        except BROKER_GONE as exc:
            log.warning(
                "reply to %s not sent, or its request not settled (%s); the request will be delivered again",
                _routing(message),
                exc,
            )
            # When that fails too, the connection is gone with the request unsettled: the broker
            # reclaims it.
            with contextlib.suppress(*BROKER_GONE):
                self.consumer.requeue_message(message)
            return result, exc_info

    def _reply(self, message: Any, result: Any, exc_info: Any) -> tuple[Any, Any]:
        """nameko's RpcConsumer.handle_result, with a reply publisher that waits for the confirm
        CONFIRM_TIMEOUT at most: a broker gone silent would otherwise hold the worker."""
        responder = BoundedResponder(
            self.amqp_uri,
            get_rpc_exchange(),
            message,
            ssl=config.get(AMQP_SSL_CONFIG_KEY),
            login_method=config.get(LOGIN_METHOD_CONFIG_KEY),
        )
        result, exc_info = responder.send_response(result, exc_info)
        self.consumer.ack_message(message)
        return result, exc_info


def _routing(message: Any) -> str:
    return str(getattr(message, "delivery_info", {}).get("routing_key", "?"))


class Rpc(NamekoRpc):
    """nameko's RPC entrypoint on the reply-safe consumer. Every entrypoint of a service must be
    this one: entrypoints share their consumer by class, and two consumers on one queue would each
    refuse the other's methods."""

    rpc_consumer = ReplySafeRpcConsumer()


rpc = Rpc.decorator
