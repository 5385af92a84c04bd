import sys
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from amqp.exceptions import RecoverableConnectionError
from nameko.events import SERVICE_POOL
from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR

from contracts.envelope import Envelope, new_event
from contracts.events import CaseApproved, CaseSubmitted
from services.common.consuming import (
    DEAD_LETTER_EXCHANGE,
    MAX_UNSETTLED,
    UNSETTLED_HEADER,
    NeverSettled,
    PoisonMessage,
    ReliableEventHandler,
    consumes,
    dead_letter_queue_name,
)


def _submitted_event():
    return new_event(
        CaseSubmitted(
            case_no="620524MZ-20261126-000001",
            item_code="62052400MZ-GF-0001",
            item_version=1,
            item_name="高龄津贴申领",
            department_code="620524MZ",
            applicant_id="u1",
            form={},
            material_codes=[],
            submitted_at=datetime(2026, 11, 26, tzinfo=UTC),
        ),
        producer="intake",
    )


class Handlers:
    def __init__(self):
        self.seen = []

    @consumes("intake", CaseSubmitted)
    def on_submitted(self, envelope, payload):
        self.seen.append((envelope, payload))
        return "done"


# --- the `consumes` wrapper ---------------------------------------------------------------------


def test_valid_body_reaches_the_handler_parsed():
    event = _submitted_event()
    handlers = Handlers()
    assert handlers.on_submitted(event.model_dump(mode="json")) == "done"
    [(envelope, payload)] = handlers.seen
    assert isinstance(envelope, Envelope)
    assert envelope.event_id == event.event_id
    assert isinstance(payload, CaseSubmitted)
    assert payload.case_no == "620524MZ-20261126-000001"


@pytest.mark.parametrize(
    "body",
    [
        None,
        "not an object",
        [],
        {},
        {"event_id": "short", "type": "case.submitted.v1"},
    ],
    ids=["none", "string", "list", "empty", "incomplete-envelope"],
)
def test_garbage_bodies_are_poison(body):
    handlers = Handlers()
    with pytest.raises(PoisonMessage):
        handlers.on_submitted(body)
    assert handlers.seen == []


def test_invalid_payload_is_poison():
    raw = _submitted_event().model_dump(mode="json")
    raw["payload"]["item_version"] = "not a number"
    handlers = Handlers()
    with pytest.raises(PoisonMessage, match=r"case\.submitted\.v1"):
        handlers.on_submitted(raw)
    assert handlers.seen == []


def test_unknown_event_type_is_poison():
    raw = _submitted_event().model_dump(mode="json")
    raw["type"] = "case.exploded.v1"
    with pytest.raises(PoisonMessage):
        Handlers().on_submitted(raw)


def test_another_registered_event_type_is_poison():
    raw = _submitted_event().model_dump(mode="json")
    raw["type"] = CaseApproved.event_type
    with pytest.raises(PoisonMessage):
        Handlers().on_submitted(raw)


def test_poison_hides_the_validation_chain():
    with pytest.raises(PoisonMessage) as info:
        Handlers().on_submitted({})
    assert info.value.__cause__ is None
    assert info.value.__suppress_context__


def test_errors_of_the_handler_itself_are_not_poison():
    class Failing:
        @consumes("intake", CaseSubmitted)
        def handle(self, envelope, payload):
            raise RuntimeError("database down")

    with pytest.raises(RuntimeError):
        Failing().handle(_submitted_event().model_dump(mode="json"))


def test_consumes_registers_a_reliable_service_pool_handler():
    [entrypoint] = getattr(Handlers.on_submitted, ENTRYPOINT_EXTENSIONS_ATTR)
    assert isinstance(entrypoint, ReliableEventHandler)
    assert entrypoint.source_service == "intake"
    assert entrypoint.event_type == "case.submitted.v1"
    assert entrypoint.handler_type == SERVICE_POOL
    assert entrypoint.reliable_delivery is True
    # Failures are dead-lettered by handle_message_processed, never requeued forever by nameko.
    assert entrypoint.requeue_on_error is False
    assert Handlers.on_submitted.__name__ == "on_submitted"


def test_consumes_passes_extra_options():
    class WithOptions:
        @consumes("intake", CaseSubmitted, expected_exceptions=(KeyError,))
        def handle(self, envelope, payload):
            pass

    [entrypoint] = getattr(WithOptions.handle, ENTRYPOINT_EXTENSIONS_ATTR)
    assert entrypoint.expected_exceptions == (KeyError,)


def test_dead_letter_queue_name():
    assert dead_letter_queue_name("evt-intake-case.submitted.v1--approval.on") == (
        "dlq.evt-intake-case.submitted.v1--approval.on"
    )


# --- acknowledging ------------------------------------------------------------------------------


class FakeConsumer:
    def __init__(self):
        self.acked = []
        self.requeued = []

    def ack_message(self, message):
        self.acked.append(message)

    def requeue_message(self, message):
        self.requeued.append(message)


class FakeMessage:
    def __init__(self, attempt=None, connected=True):
        self.headers = {} if attempt is None else {"x-yiwang-attempt": attempt}
        self.channel = SimpleNamespace(connection=object() if connected else None)
        self.rejected = []
        self.acked = False

    def reject(self, requeue=False):
        self.rejected.append(requeue)

    def ack(self):
        self.acked = True


DELAYS = (1.0, 5.0, 30.0)


def _handler(dead_letters=None, retries=None):
    """A handler whose copies (retry, dead letter) record into lists, or fail when given None."""
    handler = ReliableEventHandler("intake", "case.submitted.v1")
    handler.queue = SimpleNamespace(name="evt-intake-case.submitted.v1--approval.on_case_submitted")
    handler.consumer = FakeConsumer()
    handler.delays = DELAYS

    def dead_letter(message, error, extra_headers=None):
        if dead_letters is None:
            raise ConnectionError("broker gone")
        dead_letters.append((message, error))

    def retry_later(message, attempt, delay):
        if retries is None:
            raise ConnectionError("broker gone")
        retries.append((attempt, delay))

    handler._dead_letter_with_error = dead_letter
    handler._retry_later = retry_later
    return handler


def _exc_info(exc):
    try:
        raise exc
    except Exception:
        return sys.exc_info()


def test_success_is_acked():
    handler, message = _handler(), FakeMessage()
    handler.handle_message_processed(message, result="ok")
    assert handler.consumer.acked == [message]
    assert handler.consumer.requeued == []
    assert message.rejected == []


@pytest.mark.parametrize("lost", [BrokenPipeError(32, "Broken pipe"), RecoverableConnectionError("closed")])
def test_an_ack_the_dying_connection_refuses_leaves_the_message_to_be_redelivered(lost):
    handler, message = _handler(), FakeMessage()

    def refused(_message):
        raise lost

    handler.consumer.ack_message = refused
    handler.handle_message_processed(message, result="ok")  # no exception: the container lives on
    dead = []
    last_try = FakeMessage(attempt=len(DELAYS) + 1)
    last_try.ack = lambda: refused(last_try)  # its dead-letter copy went out; the ack of it does not
    _handler(dead, []).handle_message_processed(last_try, exc_info=_exc_info(RuntimeError("still failing")))
    assert len(dead) == 1 and not last_try.acked


def test_success_is_acked_on_a_retry_too():
    handler, message = _handler(), FakeMessage(attempt=3)
    handler.handle_message_processed(message)
    assert handler.consumer.acked == [message]
    assert message.rejected == []


@pytest.mark.parametrize(("attempt", "delay"), [(None, 1.0), (1, 1.0), (2, 5.0), (3, 30.0)])
def test_a_failure_waits_longer_each_time(attempt, delay):
    retries = []
    handler, message = _handler([], retries), FakeMessage(attempt=attempt)
    handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("flaky")))
    assert retries == [(attempt or 1, delay)]
    assert message.acked  # the delayed copy replaces it
    assert handler.consumer.requeued == [] and message.rejected == []


def test_without_a_retry_queue_it_is_retried_at_once():
    handler, message = _handler([], None), FakeMessage()
    handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("flaky")))
    assert handler.consumer.requeued == [message] and not message.acked


def test_after_the_last_retry_it_is_dead_lettered_with_its_error():
    dead, retries = [], []
    handler, message = _handler(dead, retries), FakeMessage(attempt=len(DELAYS) + 1)
    handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("still failing")))
    [(sent, error)] = dead
    assert sent is message and str(error) == "still failing" and retries == []
    assert message.acked and message.rejected == []  # the copy with the error replaces it
    assert handler.consumer.requeued == []


def test_a_dead_letter_is_counted_once_it_is_there():
    from services.common.metrics import EVENTS_DEAD_LETTERED

    handler = _handler([], [])
    counted = EVENTS_DEAD_LETTERED.labels(handler.queue.name)._value.get()
    # The last try ends on a closed channel: the broker redelivers it, and it is judged again.
    gone = FakeMessage(attempt=len(DELAYS) + 1, connected=False)
    handler.handle_message_processed(gone, exc_info=_exc_info(RuntimeError("still failing")))
    assert EVENTS_DEAD_LETTERED.labels(handler.queue.name)._value.get() == counted
    again = FakeMessage(attempt=len(DELAYS) + 1)
    handler.handle_message_processed(again, exc_info=_exc_info(RuntimeError("still failing")))
    assert EVENTS_DEAD_LETTERED.labels(handler.queue.name)._value.get() == counted + 1


def test_when_the_error_cannot_go_with_it_the_broker_dead_letters_it_anyway():
    handler, message = _handler(None, []), FakeMessage(attempt=len(DELAYS) + 1)
    handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("still failing")))
    assert message.rejected == [False] and not message.acked


def test_poison_is_dead_lettered_at_once():
    dead, retries = [], []
    handler, message = _handler(dead, retries), FakeMessage()
    handler.handle_message_processed(message, exc_info=_exc_info(PoisonMessage("bad body")))
    assert [type(error) for _, error in dead] == [PoisonMessage] and retries == []
    assert handler.consumer.acked == []


def test_nothing_is_acked_or_rejected_on_a_closed_channel():
    for attempt in (None, len(DELAYS) + 1):
        handler, message = _handler([], []), FakeMessage(attempt=attempt, connected=False)
        handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("x")))
        assert message.rejected == [] and not message.acked
        assert handler.consumer.acked == [] and handler.consumer.requeued == []


def test_an_attempt_header_that_is_not_a_count_reads_as_the_first_attempt():
    # Published by hand, say: failing on it would stop the consumer on every delivery.
    retries = []
    handler, message = _handler([], retries), FakeMessage(attempt="third")
    handler.handle_message_processed(message, exc_info=_exc_info(RuntimeError("flaky")))
    assert retries == [(1, 1.0)] and message.acked


# --- delivered again unsettled: the process handling it died ------------------------------------------


class FakeContainer:
    """Runs a managed thread at once; records the workers it was asked to start."""

    service_name = "approval"

    def __init__(self):
        self.workers = []
        self.contexts = []

    def spawn_managed_thread(self, fn, identifier=None):
        fn()

    def spawn_worker(self, entrypoint, args, kwargs, context_data=None, handle_result=None):
        self.workers.append(args)
        self.contexts.append(context_data)


def _redelivered(unsettled=None, redelivered=True):
    message = FakeMessage()
    message.delivery_info = {"redelivered": redelivered}
    if unsettled is not None:
        message.headers[UNSETTLED_HEADER] = unsettled
    return message


def _delivering_handler(copies, dead):
    """A handler in a container; its copies record into `copies`, or fail when it is None."""
    handler = _handler(dead, [])
    handler.container, handler.method_name = FakeContainer(), "on_case_submitted"

    def publish_copy(message, exchange, routing_key, extra_headers):
        if copies is None:
            raise ConnectionError("broker gone")
        copies.append((routing_key, extra_headers))

    handler._publish_copy = publish_copy
    return handler


def test_a_first_delivery_is_handled():
    copies = []
    handler, message = _delivering_handler(copies, []), _redelivered(redelivered=False)
    handler.handle_message({"body": 1}, message)
    assert handler.container.workers == [({"body": 1},)] and copies == [] and not message.acked


def test_an_upstream_handlers_attempt_is_not_taken_for_this_messages_own():
    # The event was published by a handler on its 6th try: nameko sent its context (every header
    # of its message) on as `nameko.*` headers, and this first delivery read as the last try.
    from services.common.consuming import ATTEMPT_HEADER, Delivery

    handler, message = _delivering_handler([], []), _redelivered(redelivered=False)
    message.headers.update({f"nameko.{ATTEMPT_HEADER}": 6, "nameko.x-death": [{}], "nameko.call_id_stack": ["a.b.1"]})
    handler.handle_message({"body": 1}, message)
    [context] = handler.container.contexts
    assert ATTEMPT_HEADER not in context and "x-death" not in context
    assert context["call_id_stack"] == ["a.b.1"]  # nameko's own context still travels
    delivery = Delivery().get_dependency(SimpleNamespace(data=context))
    assert (delivery.attempt, delivery.last) == (1, False)
    # Its own retry header still counts.
    handler, message = _delivering_handler([], []), _redelivered(redelivered=False)
    message.headers.update({ATTEMPT_HEADER: 4, f"nameko.{ATTEMPT_HEADER}": 1})
    handler.handle_message({"body": 1}, message)
    assert handler.container.contexts[0][ATTEMPT_HEADER] == 4


def test_a_message_delivered_again_unsettled_waits_in_the_first_retry_queue_counted():
    copies = []
    handler, message = _delivering_handler(copies, []), _redelivered(unsettled=2)
    handler.handle_message({"body": 1}, message)
    assert copies == [(f"retry.{handler.queue.name}.1000ms", {UNSETTLED_HEADER: 3})]
    assert message.acked and handler.container.workers == []  # the copy replaces it


def test_a_message_that_never_gets_settled_is_dead_lettered():
    dead = []
    handler, message = _delivering_handler([], dead), _redelivered(unsettled=MAX_UNSETTLED)
    handler.handle_message({"body": 1}, message)
    [(sent, error)] = dead
    assert sent is message and isinstance(error, NeverSettled) and "6 times" in str(error)
    assert message.acked and handler.container.workers == []


def test_a_message_that_cannot_be_set_aside_is_handled_now():
    handler, message = _delivering_handler(None, []), _redelivered()
    handler.handle_message({"body": 1}, message)
    assert handler.container.workers == [({"body": 1},)] and not message.acked


def test_retry_delays_come_from_the_environment(monkeypatch):
    from services.common.consuming import retry_delays, retry_queue_name

    monkeypatch.setenv("YIWANG_RETRY_DELAYS", "0.2, 0.5")
    assert retry_delays() == (0.2, 0.5)
    monkeypatch.delenv("YIWANG_RETRY_DELAYS")
    assert retry_delays() == (1.0, 5.0, 30.0, 120.0, 600.0)  # about 13 minutes: outages waited out
    assert retry_queue_name("evt-x--y.z", 0.2) == "retry.evt-x--y.z.200ms"


def test_setup_points_the_queue_at_the_dead_letter_exchange(monkeypatch):
    from nameko.events import EventHandler

    handler = ReliableEventHandler("intake", "case.submitted.v1")

    def fake_setup(self):
        self.queue = SimpleNamespace(name="evt-q", queue_arguments=None)

    monkeypatch.setattr(EventHandler, "setup", fake_setup)
    handler.setup()
    assert handler.queue.queue_arguments == {
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-routing-key": "evt-q",
    }
