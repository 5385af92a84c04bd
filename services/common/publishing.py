"""Publishing events from an outbox: immediately after the write, and again by a relay.

Uses nameko's EventDispatcher (exchange `{service}.events`, persistent messages, publisher
confirms) so trace context and call ids travel in the message headers.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from nameko.events import EventDispatcher
from pydantic import ValidationError
from pymongo.errors import PyMongoError

from contracts.envelope import Envelope, UnknownEventType, parse_event
from services.common.metrics import EVENTS_PUBLISHED
from services.common.outbox import OutboxCollection
from services.common.rpc import ConfirmBoundedPublisher
from services.common.telemetry import continued

log = logging.getLogger(__name__)

# A relay leaves fresh entries to the request that wrote them, to avoid needless duplicates.
RELAY_GRACE = timedelta(seconds=3)


class Publisher:
    def __init__(self, dispatch: Any) -> None:
        self._dispatch = dispatch

    def publish(self, outbox: OutboxCollection, doc_id: Any, events: Iterable[Envelope | dict[str, Any]]) -> int:
        """Publish and mark each event; a failure is logged and left for the relay. Returns how many went out."""
        sent = 0
        for event in events:
            raw = event.model_dump(mode="json") if isinstance(event, Envelope) else event
            try:
                envelope, _ = parse_event(raw)  # validated when published, as when consumed
            except (ValidationError, UnknownEventType):
                # Cannot happen for events built from contracts; if it does, do not block the rest.
                log.error("invalid event left in an outbox", extra={"doc_id": str(doc_id)})
                continue
            try:
                self._dispatch(envelope.type, raw)
            except Exception:
                log.warning("publish failed; the outbox relay will retry", extra={"event_id": envelope.event_id})
                return sent
            EVENTS_PUBLISHED.labels(envelope.type).inc()
            try:
                outbox.mark_published(doc_id, envelope.event_id)
            except PyMongoError:
                # Written and published: the caller must hear of success (a retry of a publish or
                # a password change would act twice). The relay publishes it again; consumers
                # are idempotent by event id.
                log.warning("published but not marked; the relay will send it again", extra={"doc_id": str(doc_id)})
            sent += 1
        return sent

    def publish_all(self, outbox: OutboxCollection, pending: list[tuple[Any, Envelope]]) -> None:
        """Bulk variant for documents with one pending event each (seeding): one write to mark them all.
        A failure leaves everything for the relay (duplicates are fine, losses are not)."""
        for _, event in pending:
            self._dispatch(event.type, event.model_dump(mode="json"))
        outbox.clear([doc_id for doc_id, _ in pending])

    def relay(
        self,
        outbox: OutboxCollection,
        older_than: timedelta = RELAY_GRACE,
        before_publish: Callable[[Any, dict[str, Any]], None] | None = None,
    ) -> int:
        """Publish what the writers left behind. `before_publish(doc_id, event)` first finishes what
        the writer does between its write and its publish (intake brings the read models in line
        and counts the event): an event that goes out was preceded by that work, so consumers need
        not redo it."""
        outbox.flush()  # published markers of a quiet moment: gone before they look pending
        sent = 0
        held_back: set[Any] = set()  # documents one of whose events did not go out this round
        put_back = _PutBack(outbox)
        for doc_id, event, traceparent in outbox.pending(older_than):
            if doc_id in held_back:
                # After its document's event that failed, as the writer's publish stops at one: the
                # events of one document go out in the order they were written.
                put_back(doc_id, event)
                continue
            # In the trace of the request that wrote it: the case's trace goes on past a publish
            # that failed (a broker blip) instead of starting over under the relay's timer. Only
            # while the event is young: an outage's every 2 s retry would pile spans onto it.
            young = _age(event) < RELAY_TRACE_WINDOW
            with continued(traceparent, "outbox.relay") if traceparent and young else contextlib.nullcontext():
                if before_publish is not None:
                    try:
                        before_publish(doc_id, event)
                    except Exception:
                        # Not published without it; the next round tries again, the others go on.
                        log.exception("could not prepare an event for publishing", extra={"doc_id": str(doc_id)})
                        held_back.add(doc_id)
                        put_back(doc_id, event)
                        continue
                went = self.publish(outbox, doc_id, [event])
                if not went:  # the broker away, or an envelope no longer valid: behind the others
                    held_back.add(doc_id)
                    put_back(doc_id, event)
                sent += went
        return sent


RELAY_TRACE_WINDOW = timedelta(minutes=1)


class _PutBack:
    """Puts a relay round's failed events behind the rest, in the order it met them (a millisecond
    apart: the store keeps times to the millisecond), and says so loudly when one keeps failing."""

    def __init__(self, outbox: Any) -> None:
        self.outbox, self.now, self.count = outbox, datetime.now(UTC), 0

    def __call__(self, doc_id: Any, event: dict[str, Any]) -> None:
        self.count += 1
        try:
            failures = self.outbox.put_back(event["event_id"], self.now + timedelta(milliseconds=self.count))
        except Exception:  # the store away too: it stays where it was, and is tried again
            log.warning("could not put a failed event behind the others", exc_info=True)
            return
        if failures and failures % 10 == 0:
            log.error(
                "an event has not gone out for many relay rounds",
                extra={"doc_id": str(doc_id), "event_id": event["event_id"], "rounds": failures},
            )


def _age(event: dict[str, Any]) -> timedelta:
    try:
        return datetime.now(UTC) - datetime.fromisoformat(event["occurred_at"])
    except (KeyError, TypeError, ValueError):
        return timedelta.max


class EventPublisher(EventDispatcher):
    """Dependency provider: `self.events.publish(outbox, doc_id, events)` in a worker."""

    publisher_cls = ConfirmBoundedPublisher  # a broker gone silent holds no worker

    def get_dependency(self, worker_ctx: Any) -> Publisher:
        return Publisher(super().get_dependency(worker_ctx))
