"""Stopping a service loses no work: a graceful stop lets the handler in flight finish; a process
that dies mid-handler leaves its message unacknowledged, and the next one handles it.

(nameko stops consuming before it waits for its workers, so the acknowledgement of work finished
during a stop may not reach the broker, and the next process gets the message again: at least
once, which is why every handler is idempotent by event id.)"""

from __future__ import annotations

import eventlet

from contracts.envelope import new_event
from contracts.events import ItemPublished
from services.common.consuming import MAX_UNSETTLED, UNSETTLED_HEADER, consumes, dead_letter_queue_name
from tests.support import current_vhost, dispatch_event, eventually, queue_depth

log: list[tuple[str, str]] = []
QUEUE = "evt-catalog-catalog.item_published.v1--slow.on_published"


class Slow:
    name = "slow"

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        log.append(("started", envelope.event_id))
        eventlet.sleep(1.5)
        log.append(("done", envelope.event_id))


def published() -> dict:
    payload = ItemPublished(item_code="62052400MZ-GF-0001", version=1, department_code="620524MZ")
    return new_event(payload, producer="catalog").model_dump(mode="json")


def handler_in_flight(container_factory):
    """A Slow service whose handler has started on a fresh event (and is still sleeping)."""
    log.clear()
    container = container_factory(Slow)
    container.start()
    event = published()
    dispatch_event("catalog", event)
    eventually(lambda: ("started", event["event_id"]) in log, what="the handler to start")
    return container, event


def test_a_graceful_stop_finishes_the_handler_in_flight(container_factory, rabbit_config):
    container, event = handler_in_flight(container_factory)
    container.stop()  # what SIGTERM does to `nameko run`
    assert log == [("started", event["event_id"]), ("done", event["event_id"])]

    # Whatever the next process gets again is this very event (its handler recognises it by id).
    log.clear()
    container_factory(Slow).start()
    eventlet.sleep(2)
    assert {event_id for _, event_id in log} <= {event["event_id"]}


def test_work_cut_off_by_a_crash_is_handled_by_the_next_process(container_factory, rabbit_config):
    container, event = handler_in_flight(container_factory)
    container.kill()  # no time to finish: like SIGKILL
    assert ("done", event["event_id"]) not in log

    container_factory(Slow).start()  # the restarted process
    eventually(lambda: ("done", event["event_id"]) in log, timeout=15, what="the message handled after the crash")
    # Delivered again unsettled, it waited in the first retry queue, counted once.
    assert [step for step, _ in log].count("started") == 2


def test_a_message_that_stops_every_process_handling_it_is_dead_lettered(container_factory, rabbit_config):
    from infra import deadletters

    log.clear()
    container = container_factory(Slow)
    container.start()
    event = published()
    # As if it had stopped MAX_UNSETTLED processes already: the next one it stops is one too many.
    dispatch_event("catalog", event, headers={UNSETTLED_HEADER: MAX_UNSETTLED})
    eventually(lambda: ("started", event["event_id"]) in log, what="the handler to start")
    container.kill()
    container_factory(Slow).start()
    vhost, dlq = current_vhost(), dead_letter_queue_name(QUEUE)
    eventually(lambda: queue_depth(vhost, dlq) == 1, timeout=15, what="the dead letter")
    [shown] = deadletters.peek(vhost, dlq, 5)
    assert shown["event_id"] == event["event_id"] and "never settled" in shown["error"]
    assert log == [("started", event["event_id"])]  # not run again
