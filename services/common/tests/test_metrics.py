from types import SimpleNamespace

import pytest
from prometheus_client import REGISTRY

from services.common import metrics
from services.common.errors import Conflict, ValidationFailed


class Timer:
    method_name = "check_deadlines"


class Worker:
    """Like nameko's WorkerContext: hashable, with a service name and an entrypoint."""

    def __init__(self, service):
        self.service_name, self.entrypoint = service, Timer()


def worker(service="intake"):
    return Worker(service)


def value(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.parametrize(
    ("exc_info", "outcome"),
    [
        (None, "ok"),
        ((ValidationFailed, ValidationFailed("bad"), None), "expected"),
        ((Conflict, Conflict("taken"), None), "expected"),
        ((RuntimeError, RuntimeError("boom"), None), "error"),
    ],
)
def test_outcomes(exc_info, outcome):
    assert metrics.outcome_of(exc_info) == outcome


@pytest.mark.parametrize(
    ("status", "outcome"),
    [(200, "ok"), (201, "ok"), (404, "expected"), (429, "expected"), (500, "error"), (503, "error")],
)
def test_an_http_routes_outcome_is_its_answers_status(status, outcome):
    # The gateway answers every exception as a response: without the status, every call was "ok".
    from werkzeug.wrappers import Response

    assert metrics.outcome_of(None, Response("{}", status=status)) == outcome


def test_every_entrypoint_is_timed_and_counted_by_outcome():
    provider = metrics.Metrics()
    labels = {"service": "unit", "entrypoint": "check_deadlines", "kind": "Timer"}
    before_ok = value("yiwang_entrypoint_calls_total", **labels, outcome="ok")
    before_error = value("yiwang_entrypoint_calls_total", **labels, outcome="error")
    before_count = value("yiwang_entrypoint_seconds_count", **labels)
    for exc_info in (None, None, (RuntimeError, RuntimeError("x"), None)):
        ctx = worker("unit")
        provider.worker_setup(ctx)
        provider.worker_result(ctx, None, exc_info)
    assert value("yiwang_entrypoint_calls_total", **labels, outcome="ok") == before_ok + 2
    assert value("yiwang_entrypoint_calls_total", **labels, outcome="error") == before_error + 1
    assert value("yiwang_entrypoint_seconds_count", **labels) == before_count + 3


def test_a_result_without_a_setup_is_ignored():
    metrics.Metrics().worker_result(worker("unit"), None, None)  # no error, nothing counted


def test_queue_depths_come_from_the_management_api(monkeypatch):
    queues = [
        {"name": "rpc-intake", "messages": 3, "consumers": 1},
        {"name": "evt-approval-case.approved.v1--intake.on_case_approved", "messages": 0, "consumers": 2},
        {"name": "evt-intake-case.submitted.v1--approval.on_case_submitted", "messages": 5, "consumers": 2},
        {"name": "dlq.evt-intake-case.submitted.v1--approval.on_case_submitted", "messages": 1, "consumers": 0},
        {"name": "rpc-catalog", "messages": 9, "consumers": 1},
    ]
    asked = {}

    def fake_get(url, params, auth, timeout):
        asked["url"] = url
        return SimpleNamespace(raise_for_status=lambda: None, json=lambda: queues)

    monkeypatch.setattr(metrics.requests, "get", fake_get)
    collector = metrics.QueueDepthCollector("intake", "amqp://guest:guest@127.0.0.1:5672/yiwang-e2e", "http://mgmt")
    depth, consumers = collector.collect()
    assert asked["url"] == "http://mgmt/api/queues/yiwang-e2e"
    # Intake's own queues only: approval's, whose names mention intake as the source, are approval's.
    assert {s.labels["queue"]: s.value for s in depth.samples} == {
        "rpc-intake": 3,
        "evt-approval-case.approved.v1--intake.on_case_approved": 0,
    }
    assert [s.value for s in consumers.samples] == [1, 2]
