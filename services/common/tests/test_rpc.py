"""RPC under faults: the broker or the store going away is 'unavailable' to callers, never fatal."""

from __future__ import annotations

import contextlib
import sys
from typing import Any

import eventlet
import eventlet.event
import kombu.exceptions
import pymongo.errors
import pytest
from kombu import Queue
from nameko.amqp.publish import Publisher
from nameko.exceptions import ReplyQueueExpiredWithPendingReplies
from nameko.rpc import Client, ReplyListener
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import StatusCode

from services.common.errors import Unavailable
from services.common.publishing import EventPublisher
from services.common.rpc import (
    CONFIRM_TIMEOUT,
    CONNECT_TIMEOUT,
    DEFAULT_TIMEOUT,
    REQUEST_EXPIRY,
    BoundedResponder,
    ConfirmBoundedPublisher,
    DeclareOncePublisher,
    ReplySafeRpcConsumer,
    ServiceRpc,
    StartupSafeReplyListener,
    call,
)


class Method:
    service_name, method_name = "intake", "submit_case"

    def __init__(self, error: Exception) -> None:
        self.error = error

    def call_async(self, *args: Any, **kwargs: Any) -> Any:
        raise self.error


def test_a_call_that_cannot_reach_the_broker_is_unavailable() -> None:
    with pytest.raises(Unavailable, match="broker"):
        call(Method(kombu.exceptions.OperationalError("[Errno 111] Connection refused")))


class Listener:
    """nameko's reply listener as far as its client uses it: calls filed by correlation id."""

    def __init__(self) -> None:
        self.pending: dict[str, Any] = {}

    def register_for_reply(self, correlation_id: str) -> Any:
        self.pending[correlation_id] = waiting = eventlet.event.Event()
        return waiting.wait


def _client(listener: Listener, publish: Any) -> Client:
    return Client(publish, listener.register_for_reply, {}, "catalog", "get_item")


def _broker_gone(payload: Any, **kwargs: Any) -> None:
    raise kombu.exceptions.OperationalError("Server unexpectedly closed connection")


@pytest.mark.parametrize("publish", [lambda payload, **kwargs: None, _broker_gone], ids=["no-reply", "not-sent"])
def test_a_call_given_up_is_no_longer_filed_for_a_reply(publish: Any) -> None:
    # Filed before the request goes out, unfiled by its reply only: given up, it stayed for ever.
    listener = Listener()
    with pytest.raises(Unavailable):
        call(_client(listener, publish), "A1", timeout=0.05)
    assert listener.pending == {}


def test_a_call_answered_in_time_is_unaffected() -> None:
    listener = Listener()

    def answer_soon(payload: Any, correlation_id: str, **kwargs: Any) -> None:
        eventlet.spawn_after(0.01, lambda: listener.pending.pop(correlation_id).send({"result": "ok"}))

    assert call(_client(listener, answer_soon), "A1", timeout=5) == "ok"


def test_requests_expire_when_their_callers_have_given_up() -> None:
    # A stopped service must not find, on its return, requests whose callers were told it failed.
    assert ServiceRpc("intake").publisher_options["expiration"] == REQUEST_EXPIRY == DEFAULT_TIMEOUT


class Message:
    delivery_info = {"routing_key": "intake.submit_case"}


class FakeConsumer:
    def __init__(self) -> None:
        self.requeued: list[Any] = []
        self.acked: list[Any] = []

    def ack_message(self, message: Any) -> None:
        self.acked.append(message)

    def requeue_message(self, message: Any) -> None:
        self.requeued.append(message)


def exc_info_of(error: Exception) -> Any:
    try:
        raise error
    except Exception:
        return sys.exc_info()


def test_a_store_failure_is_answered_as_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(ReplySafeRpcConsumer, "_reply", lambda self, message, result, exc_info: sent.append(exc_info))
    ReplySafeRpcConsumer().handle_result(Message(), None, exc_info_of(pymongo.errors.AutoReconnect("closed")))
    assert isinstance(sent[0][1], Unavailable)
    assert "AutoReconnect" in sent[0][1].message


def test_other_errors_are_answered_as_they_are(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(ReplySafeRpcConsumer, "_reply", lambda self, message, result, exc_info: sent.append(exc_info))
    ReplySafeRpcConsumer().handle_result(Message(), None, exc_info_of(KeyError("x")))
    assert isinstance(sent[0][1], KeyError)


def test_a_reply_the_broker_cannot_take_hands_the_request_back(monkeypatch: pytest.MonkeyPatch) -> None:
    def broker_gone(self: Any, message: Any, result: Any, exc_info: Any) -> None:
        raise kombu.exceptions.OperationalError("Server unexpectedly closed connection")

    monkeypatch.setattr(ReplySafeRpcConsumer, "_reply", broker_gone)
    consumer = ReplySafeRpcConsumer()
    consumer.consumer = FakeConsumer()
    message = Message()
    assert consumer.handle_result(message, {"case_no": "1"}, None) == ({"case_no": "1"}, None)  # no exception
    assert consumer.consumer.requeued == [message]


class DeadConsumer:
    def requeue_message(self, message: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")


def test_a_request_that_cannot_be_handed_back_is_left_to_the_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    # The ack after a sent reply met the dying connection, and so does the requeue: neither may
    # escape (nameko would kill the container, and the process with it).
    def ack_refused(self: Any, message: Any, result: Any, exc_info: Any) -> None:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(ReplySafeRpcConsumer, "_reply", ack_refused)
    consumer = ReplySafeRpcConsumer()
    consumer.consumer = DeadConsumer()
    assert consumer.handle_result(Message(), {"case_no": "1"}, None) == ({"case_no": "1"}, None)


class Waiting:
    def __init__(self) -> None:
        self.error: Exception | None = None

    def send_exception(self, error: Exception) -> None:
        self.error = error


def test_lost_replies_fail_their_callers_not_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    def lost(self: Any) -> None:
        raise ReplyQueueExpiredWithPendingReplies("Lost replies for correlation ids: 1")

    monkeypatch.setattr(ReplyListener, "check_for_lost_replies", lost)
    listener = StartupSafeReplyListener()
    listener._connected_before = True
    waiting = Waiting()
    listener.pending = {"1": waiting}
    listener.check_for_lost_replies()
    assert isinstance(waiting.error, Unavailable)
    assert listener.pending == {}


def test_the_reply_queue_is_declared_with_the_first_request_only(monkeypatch: pytest.MonkeyPatch) -> None:
    declared: list[list[str]] = []

    def publish(self: Publisher, payload: Any, **kwargs: Any) -> None:
        # What nameko's Publisher declares: its own list, plus the call's.
        declared.append([q.name for q in [*self.declare, *kwargs.get("declare", ())]])

    monkeypatch.setattr(Publisher, "publish", publish)
    reply_queue, other = Queue("rpc.reply-x"), Queue("other")
    publisher = DeclareOncePublisher("memory://", declare=[reply_queue])
    for _ in range(3):
        publisher.publish({"n": 1})
    publisher.publish({"n": 2}, declare=[other])
    assert declared == [["rpc.reply-x"], [], [], ["other"]]
    assert ServiceRpc("catalog").publisher_cls is DeclareOncePublisher


def test_every_publisher_waits_a_bounded_time_for_the_brokers_confirm() -> None:
    # A silent broker would otherwise hold a publisher until TCP gives up (tests/faults: broker silent).
    assert ConfirmBoundedPublisher("memory://").publish_kwargs["confirm_timeout"] == CONFIRM_TIMEOUT
    assert ConfirmBoundedPublisher.transport_options["connect_timeout"] == CONNECT_TIMEOUT  # reconnections
    assert issubclass(ServiceRpc("catalog").publisher_cls, ConfirmBoundedPublisher)  # requests
    assert BoundedResponder.publisher_cls is ConfirmBoundedPublisher  # replies
    assert EventPublisher.publisher_cls is ConfirmBoundedPublisher  # events
    assert 0 < CONFIRM_TIMEOUT < DEFAULT_TIMEOUT


def test_a_reply_is_sent_by_the_bounded_responder_then_its_request_acked(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[Any] = []
    monkeypatch.setattr(
        BoundedResponder, "send_response", lambda self, result, exc_info: sent.append(result) or (result, exc_info)
    )
    consumer = ReplySafeRpcConsumer()
    consumer.consumer = FakeConsumer()
    message = Message()
    assert consumer.handle_result(message, {"case_no": "1"}, None) == ({"case_no": "1"}, None)
    assert sent == [{"case_no": "1"}] and consumer.consumer.acked == [message]


# --- the client span of a call given up ---------------------------------------------------------------
# nameko-opentelemetry's own wrappers of nameko's client, driven with a tracer of the test's own (the
# process's tracer provider is global and set once).


class SlowReply:
    """nameko's RpcCall as far as the instrumentation and `call` use it."""

    correlation_id = "c-1"

    def __init__(self, tracer: Any, answer: Any) -> None:
        self.tracer, self.answer = tracer, answer

    def get_response(self) -> Any:
        from nameko_opentelemetry.rpc import get_response

        return get_response(self.tracer, {}, self._wait, self, (), {})

    def _wait(self) -> Any:
        if self.answer is None:
            eventlet.sleep(10)  # no reply comes
        return self.answer

    def result(self) -> Any:
        body = self.get_response()
        if "error" in body:
            raise KeyError(body["error"])  # as nameko raises the remote error, after the response
        return body["result"]


class TracedMethod:
    service_name, method_name, identifier = "catalog", "get_item", "catalog.get_item"

    def __init__(self, tracer: Any, answer: Any = None, broker_gone: bool = False) -> None:
        self.tracer, self.answer, self.broker_gone = tracer, answer, broker_gone
        self.context_data: dict[str, str] = {}

    def call_async(self, *args: Any, **kwargs: Any) -> Any:
        from nameko_opentelemetry.rpc import initiate_call

        return initiate_call(self.tracer, {}, self._publish, self, args, kwargs)

    def _publish(self, *args: Any, **kwargs: Any) -> SlowReply:
        if self.broker_gone:
            raise kombu.exceptions.OperationalError("Server unexpectedly closed connection")
        return SlowReply(self.tracer, self.answer)


@pytest.fixture
def traced() -> Any:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def test_a_call_that_timed_out_ends_its_span_and_gives_the_context_back(traced: Any) -> None:
    tracer, exporter = traced
    with tracer.start_as_current_span("request") as request:
        with pytest.raises(Unavailable, match="did not answer"):
            call(TracedMethod(tracer), "A1", timeout=0.05)
        assert trace.get_current_span() is request  # later work is not filed under the lost call
    spans = {span.name: span for span in exporter.get_finished_spans()}
    assert set(spans) == {"RPC to catalog.get_item", "request"}
    lost = spans["RPC to catalog.get_item"]
    assert lost.status.status_code is StatusCode.ERROR
    assert "did not answer" in (lost.status.description or "")
    assert lost.parent is not None and lost.parent.span_id == request.get_span_context().span_id


def test_a_call_that_could_not_be_sent_ends_its_span_and_gives_the_context_back(traced: Any) -> None:
    tracer, exporter = traced
    with tracer.start_as_current_span("request") as request:
        with pytest.raises(Unavailable, match="broker") as refused:
            call(TracedMethod(tracer, broker_gone=True), "A1")
        # While the error lives (its traceback holds the frame that began the span), not only once
        # the garbage collector dropped it in whatever greenthread it happened to run.
        assert refused.value is not None and trace.get_current_span() is request
    lost = [span for span in exporter.get_finished_spans() if span.name.startswith("RPC to")]
    assert len(lost) == 1 and lost[0].status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("broker_gone", [False, True], ids=["timed-out", "not-sent"])
def test_a_call_in_a_trace_not_sampled_gives_the_context_back_too(broker_gone: bool) -> None:
    # A client's traceparent may say "not sampled": the spans are not recorded, but are current.
    tracer = TracerProvider(sampler=ALWAYS_OFF).get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        with pytest.raises(Unavailable) as refused:
            call(TracedMethod(tracer, broker_gone=broker_gone), "A1", timeout=0.05)
        assert refused.value is not None and trace.get_current_span() is request


@pytest.mark.parametrize("answer", [{"result": "ok"}, {"error": "not_found"}])
def test_a_call_answered_keeps_the_instrumentations_span(traced: Any, answer: Any) -> None:
    # Answered, with a result or a remote error: the instrumentation ended the span; it is not
    # ended (or exited) twice.
    tracer, exporter = traced
    with tracer.start_as_current_span("request") as request:
        with contextlib.suppress(KeyError):
            call(TracedMethod(tracer, answer), "A1")
        assert trace.get_current_span() is request
    calls = [span for span in exporter.get_finished_spans() if span.name.startswith("RPC to")]
    assert len(calls) == 1 and calls[0].status.status_code is StatusCode.UNSET
