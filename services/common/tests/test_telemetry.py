import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Status, StatusCode

from services.common import telemetry

PHONE, ID_NUMBER = "13800138000", "620524194005060136"


def exported_through_scrubbing(make_span):
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(telemetry.ScrubbingSpanExporter(memory)))
    make_span(provider.get_tracer("test"))
    [span] = memory.get_finished_spans()
    return span


def test_personal_data_never_leaves_in_a_span():
    def make(tracer):
        with tracer.start_as_current_span("rpc", attributes={"case_no": "C-1", "args": f"login {ID_NUMBER}"}) as span:
            span.set_attribute("phones", [PHONE, "x"])
            span.add_event("exception", {"exception.message": f"no user {ID_NUMBER}"})
            span.set_status(Status(StatusCode.ERROR, f"phone {PHONE} taken"))

    span = exported_through_scrubbing(make)
    assert span.attributes["case_no"] == "C-1"
    assert span.attributes["args"] == "login [id-number]"
    assert span.attributes["phones"] == ("[phone]", "x")
    assert span.events[0].attributes["exception.message"] == "no user [id-number]"
    assert span.status.description == "phone [phone] taken" and span.status.status_code == StatusCode.ERROR
    assert span.name == "rpc" and span.end_time is not None


def test_the_brokers_password_never_leaves_in_a_span():
    # nameko-opentelemetry sets the AMQP URI, credentials and all, on every RPC and event span.
    def make(tracer):
        with tracer.start_as_current_span("rpc", attributes={"nameko.amqp.amqp_uri": "amqp://yiwang:S3cret@mq:5672/v"}):
            pass

    assert exported_through_scrubbing(make).attributes["nameko.amqp.amqp_uri"] == "amqp://yiwang:**@mq:5672/v"


@pytest.mark.parametrize(
    ("env", "kinds"),
    [
        ({}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, ["OTLPSpanExporter"]),
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, ["ZipkinExporter"]),
        (
            {"OTEL_TRACES_EXPORTER": "zipkin,otlp", "OTEL_EXPORTER_OTLP_ENDPOINT": "x"},
            ["ZipkinExporter", "OTLPSpanExporter"],
        ),
        ({"OTEL_TRACES_EXPORTER": "none", "YIWANG_SPAN_DIR": "/tmp"}, ["JsonLinesSpanExporter"]),
    ],
)
def test_exporters_follow_the_standard_selection(monkeypatch, env, kinds):
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT", "YIWANG_SPAN_DIR"):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert [type(e).__name__ for e, _ in telemetry._exporters("intake")] == kinds


def test_an_unknown_exporter_is_refused(monkeypatch):
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "carrier-pigeon")
    with pytest.raises(ValueError, match="carrier-pigeon"):
        telemetry._exporters("intake")


@pytest.mark.parametrize(("value", "enabled"), [(None, True), ("on", True), ("off", False), ("0", False)])
def test_tracing_can_be_switched_off(monkeypatch, value, enabled):
    monkeypatch.delenv("YIWANG_TRACING", raising=False)
    if value is not None:
        monkeypatch.setenv("YIWANG_TRACING", value)
    assert telemetry.tracing_enabled() is enabled


def test_later_work_continues_the_trace_it_was_stored_from():
    memory = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(memory))
    tracer = provider.get_tracer("test")
    with tracer.start_as_current_span("request") as request:
        stored = telemetry.current_traceparent()
    assert stored is not None and format(request.get_span_context().trace_id, "032x") in stored
    with telemetry.continued(stored, "deliver sms") as later:
        pass
    assert later.get_span_context().trace_id == request.get_span_context().trace_id
    with telemetry.continued(None, "deliver sms") as fresh:
        pass
    assert fresh.get_span_context().trace_id != request.get_span_context().trace_id
