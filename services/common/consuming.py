"""Consuming events reliably: validated envelopes, retries with backoff, then a dead-letter queue.

nameko acks a message whose handler raised (with `requeue_on_error=False`), which would drop
it. Here a failed message waits in a retry queue of its handler queue (`retry.<queue>.<delay>`,
whose TTL sends it back) for `YIWANG_RETRY_DELAYS` seconds [1,5,30,120,600], one delay per retry
(about 13 minutes in all: a dependency restarting or failing over is waited out, not dead-lettered). A
message that still fails, or that is not a valid event at all, lands in `dlq.<queue>` with its
error (`x-yiwang-error`, masked like log lines) for inspection and replay
(`python -m infra.deadletters`). Should a copy fail to publish, the message is requeued (a
retry) or rejected (the broker dead-letters it without the error): never dropped.
Handlers themselves must be idempotent by `event_id` (redelivery is normal).

A message the broker delivers again unsettled (its process died or lost its connection while
handling it) waits in the first retry queue before it runs again, counted in
`x-yiwang-unsettled`; past MAX_UNSETTLED it is dead-lettered: a message that kills every process
handling it (memory, a crash in a native library) would otherwise come back for ever, with no
handler error ever counted. Copies go out `mandatory`: one the broker cannot route (its queue
deleted) is an error, not confirmed and lost.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from amqp.exceptions import AMQPError, ChannelError
from kombu import Connection, Exchange, Queue
from nameko.amqp.consume import Consumer as ConsumerCore
from nameko.containers import get_service_name
from nameko.events import SERVICE_POOL, EventHandler
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR, DependencyProvider
from nameko.messaging import HEADER_PREFIX
from pydantic import ValidationError

from contracts.envelope import EventPayload, UnknownEventType, parse_event
from services.common.logs import scrub
from services.common.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED
from services.common.rpc import CONFIRM_TIMEOUT, CONNECT_TIMEOUT

log = logging.getLogger(__name__)
NO_ROUTE = 312  # the broker's reply to a mandatory message no queue takes

DEAD_LETTER_EXCHANGE = "yiwang.dead-letter"
ERROR_HEADER, FAILED_AT_HEADER = "x-yiwang-error", "x-yiwang-failed-at"
ATTEMPT_HEADER = "x-yiwang-attempt"  # 1 for the first delivery, 2 for the first retry ...
UNSETTLED_HEADER = "x-yiwang-unsettled"  # deliveries that ended with no ack: the handler's process died
# Unsettled deliveries a message may have before it is dead-lettered: a restart or a lost connection
# leaves a few messages so now and then; five in a row is a message that stops its handlers.
MAX_UNSETTLED = 5
# What acking or rejecting raises when the connection or channel is gone (BrokenPipeError and kin).
CONNECTION_LOST = (OSError, AMQPError)


def retry_delays() -> tuple[float, ...]:
    """Seconds to wait before each retry (`YIWANG_RETRY_DELAYS`, comma-separated)."""
    raw = os.environ.get("YIWANG_RETRY_DELAYS", "1,5,30,120,600")
    return tuple(float(part) for part in raw.split(",") if part.strip())


def retry_queue_name(queue_name: str, delay: float) -> str:
    # The delay is in the name: a queue's TTL cannot change once declared.
    return f"retry.{queue_name}.{round(delay * 1000)}ms"


class PoisonMessage(Exception):
    """The message can never be handled (not a valid event): dead-letter it at once."""


class NeverSettled(Exception):
    """The message was delivered MAX_UNSETTLED + 1 times, and no handler ever finished it."""


def _count_header(headers: dict[str, Any] | None, name: str, default: int) -> int:
    """A counting header; one that is not a count (published by hand, say) reads as `default`,
    rather than failing the consumer on every delivery."""
    try:
        return int((headers or {}).get(name, default))
    except (TypeError, ValueError):
        return default


def dead_letter_queue_name(queue_name: str) -> str:
    return f"dlq.{queue_name}"


class _DeadLetteringConsumer(ConsumerCore):
    """kombu acks a message whose body it cannot decode (not JSON, a type we do not accept), which
    drops it with a log line. Rejected instead, the queue dead-letters it (`x-dead-letter-exchange`)."""

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        queue = self.queues[0].name  # a handler consumes one queue
        log.error("undecodable message dead-lettered", extra={"queue": queue, "error": type(exc).__name__})
        try:
            message.reject(requeue=False)
        except CONNECTION_LOST:
            log.warning("the connection went before the message was settled; it comes again", exc_info=True)
        else:
            EVENTS_DEAD_LETTERED.labels(queue).inc()  # once, when it is really gone there


class ReliableEventHandler(EventHandler):
    consumer_cls = _DeadLetteringConsumer

    def setup(self) -> None:
        super().setup()
        # The consumer holds this very Queue object, so the arguments apply when it declares it.
        self.queue.queue_arguments = {
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.queue.name,
        }

    def start(self) -> None:
        self.delays = retry_delays()
        with Connection(self.amqp_uri) as conn:
            self.declare_queues(conn, own_queue=False)  # the consumer declares its own as it starts
        super().start()

    def declare_queues(self, conn: Connection, own_queue: bool = True) -> None:
        """Declare the handler's queues: its own (bound to its event), the dead-letter queue and the
        retry queues. Once `setup` has run; `declare_event_queues` calls it before any process starts."""
        if own_queue:
            self.queue(conn.default_channel).declare()
        exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
        dlq = Queue(
            dead_letter_queue_name(self.queue.name), exchange=exchange, routing_key=self.queue.name, durable=True
        )
        dlq(conn.default_channel).declare()
        for delay in self._delays():
            # Nobody consumes a retry queue: its TTL dead-letters each message back to our queue.
            waiting = Queue(
                retry_queue_name(self.queue.name, delay),
                durable=True,
                queue_arguments={
                    "x-message-ttl": round(delay * 1000),
                    "x-dead-letter-exchange": "",
                    "x-dead-letter-routing-key": self.queue.name,
                },
            )
            waiting(conn.default_channel).declare()

    def _delays(self) -> tuple[float, ...]:
        """The retry delays read at start; read now where a handler was not started (declared only)."""
        return getattr(self, "delays", None) or retry_delays()

    def handle_message(self, body: Any, message: Any) -> None:
        _drop_propagated_transport_headers(message.headers)
        if not message.delivery_info.get("redelivered"):
            super().handle_message(body, message)
            return

        def set_aside_or_handle() -> None:
            # In a thread of its own, as nameko starts workers: the consumer must not wait on it.
            if not self._set_aside(message):
                super(ReliableEventHandler, self).handle_message(body, message)

        self.container.spawn_managed_thread(set_aside_or_handle, identifier=f"set_aside[{self.queue.name}]")

    def _set_aside(self, message: Any) -> bool:
        """Count an unsettled delivery: to the first retry queue, or past MAX_UNSETTLED to the dead
        letters. False if that could not be done: the message is handled now instead."""
        unsettled = _count_header(message.headers, UNSETTLED_HEADER, 0) + 1
        try:
            if unsettled > MAX_UNSETTLED:
                error = NeverSettled(f"delivered {unsettled} times and never settled: does it stop its handler?")
                log.error("event dead-lettered", extra={"queue": self.queue.name, "unsettled": unsettled})
                self._dead_letter_with_error(message, error, {UNSETTLED_HEADER: unsettled})
            else:
                delay = self._delays()[0]
                log.warning("event delivered again unsettled; handled later", extra={"queue": self.queue.name})
                self._publish_copy(message, "", retry_queue_name(self.queue.name, delay), {UNSETTLED_HEADER: unsettled})
        except Exception:
            log.warning("could not set the message aside; handling it now", exc_info=True)
            return False
        try:
            message.ack()
        except CONNECTION_LOST:  # the copy is out, and the broker delivers this one again: a duplicate
            log.warning("the connection went before the message was settled; it comes again", exc_info=True)
        if unsettled > MAX_UNSETTLED:
            EVENTS_DEAD_LETTERED.labels(self.queue.name).inc()
        return True

    def handle_message_processed(self, message: Any, result: Any = None, exc_info: Any = None) -> None:
        try:
            self._settle(message, exc_info)
        except CONNECTION_LOST:
            # The connection died under the ack (a broker restart, a reset): nothing is settled, so
            # the broker redelivers the message, and handlers are idempotent. Raised here, it would
            # kill the service's container, and with it the process (CI saw a notification process
            # die so).
            log.warning("the connection went before the message was settled; it comes again", exc_info=True)

    def _settle(self, message: Any, exc_info: Any) -> None:
        if exc_info is None:
            self.consumer.ack_message(message)
            EVENTS_CONSUMED.labels(self.queue.name).inc()
            return
        poison = isinstance(exc_info[1], PoisonMessage)
        attempt = _count_header(message.headers, ATTEMPT_HEADER, 1)
        delays = self._delays()
        if not poison and attempt <= len(delays):
            if not message.channel.connection:
                return  # the connection is gone: the broker redelivers it
            delay = delays[attempt - 1]
            log.warning("event handler failed; retrying later", extra={"queue": self.queue.name, "delay": delay})
            try:
                self._retry_later(message, attempt, delay)
            except Exception:
                self.consumer.requeue_message(message)  # no retry queue at hand: at once, then
            else:
                message.ack()
            return
        if not message.channel.connection:
            return  # the connection is gone: the broker redelivers it (and it is judged again)
        log.error("event dead-lettered", extra={"queue": self.queue.name, "poison": poison})
        try:
            self._dead_letter_with_error(message, exc_info[1])
        except Exception:
            log.warning("dead letter with its error failed; rejecting it", extra={"queue": self.queue.name})
            message.reject(requeue=False)
        else:
            message.ack()
        EVENTS_DEAD_LETTERED.labels(self.queue.name).inc()  # counted once it is really there

    def _retry_later(self, message: Any, attempt: int, delay: float) -> None:
        self._publish_copy(message, "", retry_queue_name(self.queue.name, delay), {ATTEMPT_HEADER: attempt + 1})

    def _publish_copy(self, message: Any, exchange: Any, routing_key: str, extra_headers: dict[str, Any]) -> None:
        """The message again, persistent and confirmed, with more headers. Should the queue it goes
        to be gone (a retry or dead-letter queue deleted by hand), the handler's queues are declared
        again and the copy sent once more: else every retry would fail to publish and requeue the
        message at once, uncounted, for ever, and a rejected one would be dropped with no queue."""
        try:
            self._send_copy(message, exchange, routing_key, extra_headers)
        except ChannelError as exc:
            if exc.reply_code != NO_ROUTE or not self._declared_again():
                raise
            self._send_copy(message, exchange, routing_key, extra_headers)

    def _declared_again(self) -> bool:
        try:
            log.warning(
                "a retry or dead-letter queue is missing; declaring them again", extra={"queue": self.queue.name}
            )
            with Connection(self.amqp_uri, connect_timeout=CONNECT_TIMEOUT) as conn:
                self.declare_queues(conn, own_queue=False)
        except Exception:
            log.warning("could not declare the queues again", exc_info=True)
            return False
        return True

    def _send_copy(self, message: Any, exchange: Any, routing_key: str, extra_headers: dict[str, Any]) -> None:
        options = {"confirm_publish": True}
        with Connection(self.amqp_uri, transport_options=options, connect_timeout=CONNECT_TIMEOUT) as conn:
            conn.Producer().publish(
                message.body,
                exchange=exchange,
                routing_key=routing_key,
                headers={**(message.headers or {}), **extra_headers},
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                serializer=None,
                confirm_timeout=CONFIRM_TIMEOUT,
                # Routed nowhere (its queue deleted by hand), py-amqp raises rather than confirming
                # a message the broker dropped; the original is then requeued or rejected.
                mandatory=True,
            )

    def _dead_letter_with_error(
        self, message: Any, error: BaseException, extra_headers: dict[str, Any] | None = None
    ) -> None:
        headers = {
            ERROR_HEADER: scrub(f"{type(error).__name__}: {error}")[:1000],
            FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
            **(extra_headers or {}),
        }
        self._publish_copy(
            message, Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True), self.queue.name, headers
        )


def _drop_propagated_transport_headers(headers: dict[str, Any] | None) -> None:
    """nameko makes every header of a message its worker's context data, and sends all of that
    on with whatever the worker publishes, as `nameko.<header>`. So an upstream handler on its
    6th try stamped `nameko.x-yiwang-attempt: 6` on the events it sent, and this message's
    worker read it as its own attempt (`Delivery`): a first delivery taken for the last. Transport
    headers (`x-…`: attempts, deaths, errors) are the message's own, never context."""
    if headers:
        for key in [k for k in headers if k.startswith(f"{HEADER_PREFIX}.x-")]:
            del headers[key]


@dataclass(frozen=True)
class DeliveryAttempt:
    attempt: int  # 1 for the first delivery
    last: bool


class Delivery(DependencyProvider):
    """Which try of its event a reliable handler's worker is on: `last` when a failure now goes to
    the dead letters rather than to another retry (read from the message's attempt header, which
    nameko hands to the worker as context data)."""

    def get_dependency(self, worker_ctx: Any) -> DeliveryAttempt:
        attempt = _count_header(worker_ctx.data, ATTEMPT_HEADER, 1)
        return DeliveryAttempt(attempt, last=attempt > len(retry_delays()))


def consumes(source_service: str, payload_model: type[EventPayload], **options: Any) -> Callable:
    """Decorate `handler(self, envelope, payload)` as a reliable handler of one event type."""

    def decorator(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def entry(self: Any, body: Any) -> Any:
            try:
                envelope, payload = parse_event(body, expected=payload_model)
            except (ValidationError, UnknownEventType) as exc:
                raise PoisonMessage(f"invalid {payload_model.event_type} event: {exc}") from None
            return fn(self, envelope, payload)

        return ReliableEventHandler.decorator(
            source_service, payload_model.event_type, handler_type=SERVICE_POOL, reliable_delivery=True, **options
        )(entry)

    return decorator


class _Declaring:
    """What an entrypoint needs of its container to set up its queue (no process, no consumer)."""

    def __init__(self, service_name: str) -> None:
        self.service_name = service_name
        self.shared_extensions: dict[Any, Any] = {}


def declare_event_queues(service_classes: list[type], amqp_uri: str) -> list[str]:
    """Declare every reliable handler's queues of these services; the names of their own queues.

    Each process declares its handlers' queues as it starts; an event published before (intake
    answering a submission while approval starts, on a broker that never saw approval) would be
    routed nowhere, confirmed and lost. Declared first, it waits in the queue instead."""
    declared = []
    with Connection(amqp_uri) as conn:
        for service_cls in service_classes:
            container = _Declaring(get_service_name(service_cls))
            for method_name, method in inspect.getmembers(service_cls, callable):
                for entrypoint in getattr(method, ENTRYPOINT_EXTENSIONS_ATTR, ()):
                    if isinstance(entrypoint, ReliableEventHandler):
                        handler = entrypoint.bind(container, method_name)
                        handler.setup()
                        handler.declare_queues(conn)
                        declared.append(handler.queue.name)
    return declared
