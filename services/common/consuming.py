"""Consuming events reliably: validated envelopes, one retry, then a dead-letter queue.

nameko acks a message whose handler raised (with `requeue_on_error=False`), which would drop
it. Here each handler queue gets a dead-letter exchange: a message that fails twice, or that
is not a valid event at all, lands in `dlq.<queue>` with its error (`x-yiwang-error`, masked like
log lines) for inspection and replay (`python -m infra.deadletters`). Should that publish fail,
the message is rejected and the broker dead-letters it without the error: never dropped.
Handlers themselves must be idempotent by `event_id` (redelivery is normal).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from kombu import Connection, Exchange, Queue
from nameko.events import SERVICE_POOL, EventHandler
from pydantic import ValidationError

from contracts.envelope import EventPayload, UnknownEventType, parse_event
from services.common.logs import scrub
from services.common.metrics import EVENTS_CONSUMED, EVENTS_DEAD_LETTERED

log = logging.getLogger(__name__)

DEAD_LETTER_EXCHANGE = "yiwang.dead-letter"
ERROR_HEADER, FAILED_AT_HEADER = "x-yiwang-error", "x-yiwang-failed-at"


class PoisonMessage(Exception):
    """The message can never be handled (not a valid event): dead-letter it at once."""


def dead_letter_queue_name(queue_name: str) -> str:
    return f"dlq.{queue_name}"


class ReliableEventHandler(EventHandler):
    def setup(self) -> None:
        super().setup()
        # The consumer holds this very Queue object, so the arguments apply when it declares it.
        self.queue.queue_arguments = {
            "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
            "x-dead-letter-routing-key": self.queue.name,
        }

    def start(self) -> None:
        exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
        dlq = Queue(
            dead_letter_queue_name(self.queue.name), exchange=exchange, routing_key=self.queue.name, durable=True
        )
        with Connection(self.amqp_uri) as conn:
            dlq(conn.default_channel).declare()
        super().start()

    def handle_message_processed(self, message: Any, result: Any = None, exc_info: Any = None) -> None:
        if exc_info is None:
            self.consumer.ack_message(message)
            EVENTS_CONSUMED.labels(self.queue.name).inc()
            return
        poison = isinstance(exc_info[1], PoisonMessage)
        if not poison and not message.delivery_info.get("redelivered"):
            log.warning("event handler failed; retrying once", extra={"queue": self.queue.name})
            self.consumer.requeue_message(message)
            return
        log.error("event dead-lettered", extra={"queue": self.queue.name, "poison": poison})
        EVENTS_DEAD_LETTERED.labels(self.queue.name).inc()
        if not message.channel.connection:
            return  # the connection is gone: the broker redelivers it
        try:
            self._dead_letter_with_error(message, exc_info[1])
        except Exception:
            log.warning("dead letter with its error failed; rejecting it", extra={"queue": self.queue.name})
            message.reject(requeue=False)
        else:
            message.ack()

    def _dead_letter_with_error(self, message: Any, error: BaseException) -> None:
        headers = {
            **(message.headers or {}),
            ERROR_HEADER: scrub(f"{type(error).__name__}: {error}")[:1000],
            FAILED_AT_HEADER: datetime.now(UTC).isoformat(),
        }
        with Connection(self.amqp_uri, transport_options={"confirm_publish": True}) as conn:
            conn.Producer().publish(
                message.body,
                exchange=Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True),
                routing_key=self.queue.name,
                headers=headers,
                content_type=message.content_type,
                content_encoding=message.content_encoding,
                delivery_mode=2,
                serializer=None,
            )


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
