"""Reliable consuming against the real broker: retried once, then dead-lettered, never dropped."""

from __future__ import annotations

import pytest
import requests

from contracts.envelope import new_event
from contracts.events import ItemPublished
from services.common.consuming import consumes, dead_letter_queue_name, retry_delays
from tests.support import current_vhost, dispatch_event, eventually, queue_depth

attempts: dict[str, int] = {}


class Flaky:
    name = "flaky"

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        attempts[payload.item_code] = attempts.get(payload.item_code, 0) + 1
        if payload.item_code.endswith("0001") and attempts[payload.item_code] == 1:
            raise ConnectionError("a transient failure")
        if payload.item_code.endswith("0002"):
            raise RuntimeError("always fails")


def event(code: str) -> dict:
    return new_event(
        ItemPublished(item_code=code, version=1, department_code="620524MZ"), producer="catalog"
    ).model_dump(mode="json")


def test_transient_failure_is_retried_and_permanent_one_dead_lettered(container_factory, rabbit_config):
    """Retried after a delay each time (YIWANG_RETRY_DELAYS: short in the tests), then dead-lettered."""
    attempts.clear()
    container_factory(Flaky).start()
    dlq = dead_letter_queue_name("evt-catalog-catalog.item_published.v1--flaky.on_published")

    dispatch_event("catalog", event("62052400MZ-GF-0001"))
    eventually(lambda: attempts.get("62052400MZ-GF-0001") == 2, what="the retry")

    dispatch_event("catalog", event("62052400MZ-GF-0002"))
    eventually(lambda: queue_depth(current_vhost(), dlq) == 1, timeout=15, what="the dead letter")
    assert attempts["62052400MZ-GF-0002"] == 1 + len(retry_delays())  # once, then each retry
    assert attempts["62052400MZ-GF-0001"] == 2  # succeeded on the retry, not dead-lettered


broken = {"on": True}


class Sometimes:
    """Fails while `broken` says so: a bug fixed later, then the dead letters are replayed."""

    name = "sometimes"
    handled: list[str] = []

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        if broken["on"]:
            raise RuntimeError(f"cannot handle {payload.item_code} for 13800138000")
        self.handled.append(payload.item_code)


def test_dead_letters_carry_their_error_and_replay_into_their_queue(container_factory, rabbit_config):
    from infra import deadletters

    broken["on"], Sometimes.handled = True, []
    container_factory(Sometimes).start()
    vhost = current_vhost()
    queue = "evt-catalog-catalog.item_published.v1--sometimes.on_published"
    dlq = dead_letter_queue_name(queue)
    sent = event("62052400MZ-GF-0003")
    dispatch_event("catalog", sent)
    eventually(lambda: queue_depth(vhost, dlq) == 1, timeout=15, what="the dead letter")

    [shown] = deadletters.peek(vhost, dlq, 5)
    assert shown["event_id"] == sent["event_id"] and shown["type"] == "catalog.item_published.v1"
    assert shown["error"] == "RuntimeError: cannot handle 62052400MZ-GF-0003 for [phone]"  # masked
    assert shown["failed_at"]
    assert [q["name"] for q in deadletters.dead_letter_queues(vhost) if q["messages"]] == [dlq]

    broken["on"] = False  # the fix is deployed
    assert deadletters.replay(vhost, dlq) == 1
    eventually(lambda: Sometimes.handled == ["62052400MZ-GF-0003"], what="the replayed event handled")
    eventually(lambda: queue_depth(vhost, dlq) == 0, timeout=15, what="an empty dead-letter queue (stats lag)")
    assert deadletters.peek(vhost, dlq, 5) == []


def test_a_body_that_is_not_json_is_dead_lettered_not_dropped(container_factory, rabbit_config):
    from kombu import Connection
    from nameko import config

    from infra import deadletters
    from services.common.metrics import EVENTS_DEAD_LETTERED

    container_factory(Sometimes).start()
    vhost = current_vhost()
    queue = "evt-catalog-catalog.item_published.v1--sometimes.on_published"
    counted = EVENTS_DEAD_LETTERED.labels(queue)._value.get()
    with Connection(config["AMQP_URI"]) as conn:
        conn.Producer().publish(
            b"{not json", routing_key=queue, content_type="application/json", content_encoding="utf-8", serializer=None
        )
    eventually(lambda: queue_depth(vhost, dead_letter_queue_name(queue)) == 1, timeout=15, what="the dead letter")
    assert len(deadletters.peek(vhost, dead_letter_queue_name(queue), 5)) == 1
    assert EVENTS_DEAD_LETTERED.labels(queue)._value.get() == counted + 1  # the metric operators alert on


class Stubborn:
    """A cause not fixed yet when an operator replays."""

    name = "stubborn"
    tries: list[str] = []

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        self.tries.append(payload.item_code)
        raise RuntimeError("still broken")


def test_a_replay_while_the_cause_persists_retries_each_message_once_more_in_full(container_factory, rabbit_config):
    from infra import deadletters

    Stubborn.tries = []
    container_factory(Stubborn).start()
    vhost = current_vhost()
    dlq = dead_letter_queue_name("evt-catalog-catalog.item_published.v1--stubborn.on_published")
    dispatch_event("catalog", event("62052400MZ-GF-0004"))
    eventually(lambda: queue_depth(vhost, dlq) == 1, timeout=15, what="the dead letter")
    assert len(Stubborn.tries) == 1 + len(retry_delays())

    # What was there when it started, once: the message failing again does not send the replay
    # round in circles, and it gets every retry again (its attempt count starts over).
    assert deadletters.replay(vhost, dlq) == 1
    eventually(lambda: len(Stubborn.tries) == 2 * (1 + len(retry_delays())), timeout=15, what="every retry again")
    eventually(lambda: queue_depth(vhost, dlq) == 1, timeout=15, what="the dead letter back")


def test_a_copy_the_broker_cannot_route_is_an_error_not_a_loss(rabbit_config):
    # A retry or dead-letter queue deleted by hand: the broker would confirm the copy and drop it,
    # and the original would be acked. An error instead: the original is requeued or rejected.
    from types import SimpleNamespace

    from amqp.exceptions import ChannelError

    from services.common.consuming import ReliableEventHandler

    handler = ReliableEventHandler("catalog", "catalog.item_published.v1")
    message = SimpleNamespace(body=b"{}", headers={}, content_type="application/json", content_encoding="utf-8")
    with pytest.raises(ChannelError):
        handler._publish_copy(message, "", "retry.evt-no-such-queue.200ms", {})


def test_dead_letters_of_a_queue_that_is_gone_are_left_where_they_are(rabbit_config):
    from kombu import Connection, Exchange, Queue
    from nameko import config

    from infra import deadletters
    from services.common.consuming import DEAD_LETTER_EXCHANGE

    origin = "evt-catalog-catalog.item_published.v1--retired.on_published"  # its handler retired
    with Connection(config["AMQP_URI"]) as conn:
        exchange = Exchange(DEAD_LETTER_EXCHANGE, type="direct", durable=True)
        dlq = Queue(dead_letter_queue_name(origin), exchange=exchange, routing_key=origin, durable=True)
        bound = dlq(conn.default_channel)
        bound.declare()
        conn.Producer().publish({"kept": True}, exchange=exchange, routing_key=origin, delivery_mode=2)
        with pytest.raises(deadletters.OriginGone):
            deadletters.replay(current_vhost(), dlq.name)
        assert bound.queue_declare(passive=True).message_count == 1  # still there


class Late:
    """A handler whose process has never run on this broker yet."""

    name = "late"
    handled: list[str] = []

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        self.handled.append(payload.item_code)


def test_an_event_published_before_its_handler_ever_started_waits_for_it(container_factory, rabbit_config):
    from nameko import config

    from services.common.consuming import declare_event_queues

    Late.handled = []
    declared = declare_event_queues([Late], config["AMQP_URI"])
    assert declared == ["evt-catalog-catalog.item_published.v1--late.on_published"]
    dispatch_event("catalog", event("62052400MZ-GF-0005"))  # undeclared, it was routed nowhere: lost
    container_factory(Late).start()  # declares the same queue with the same arguments: no conflict
    eventually(lambda: Late.handled == ["62052400MZ-GF-0005"], what="the event published before the start")


def test_the_topology_step_declares_every_services_handlers(rabbit_config):
    import os
    import subprocess
    import sys

    from kombu import Connection
    from nameko import config

    from infra.system import ROOT

    env = {**os.environ, "YIWANG_RABBIT_VHOST": current_vhost()}  # the test's own vhost
    subprocess.run([sys.executable, "-m", "infra.topology"], cwd=ROOT, env=env, check=True, timeout=120)
    with Connection(config["AMQP_URI"]) as conn:
        for queue in (
            "evt-intake-case.submitted.v1--approval.on_case_submitted",
            "evt-approval-case.approved.v1--intake.on_case_approved",
            "dlq.evt-intake-case.submitted.v1--approval.on_case_submitted",
        ):
            conn.default_channel.queue_declare(queue, passive=True)  # raises when it does not exist


class Unlucky:
    """Fails every time, on a broker where someone deleted its retry and dead-letter queues."""

    name = "unlucky"
    tries: list[str] = []

    @consumes("catalog", ItemPublished)
    def on_published(self, envelope, payload):
        self.tries.append(payload.item_code)
        raise RuntimeError("always fails")


def test_retry_and_dead_letter_queues_deleted_by_hand_are_declared_again(container_factory, rabbit_config):
    # Before, each retry's copy failed to route, and the message was requeued at once, with no
    # count, for ever (thousands of tries a second); its dead letter had no queue either.
    from kombu import Connection, Queue
    from nameko import config

    from services.common.consuming import retry_queue_name

    Unlucky.tries = []
    container_factory(Unlucky).start()
    own = "evt-catalog-catalog.item_published.v1--unlucky.on_published"
    deleted = [retry_queue_name(own, delay) for delay in retry_delays()] + [dead_letter_queue_name(own)]
    with Connection(config["AMQP_URI"]) as conn:
        for name in deleted:
            Queue(name)(conn.default_channel).delete()

    def dead_letters() -> int:
        try:
            return queue_depth(current_vhost(), dead_letter_queue_name(own))
        except requests.HTTPError:  # not there (yet)
            return 0

    dispatch_event("catalog", event("62052400MZ-GF-0007"))
    eventually(lambda: dead_letters() == 1, timeout=15, what="the dead letter")
    assert len(Unlucky.tries) == 1 + len(retry_delays())  # each retry once, counted, then dead-lettered
