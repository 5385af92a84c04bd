"""What operations teams read besides traces: JSON log lines that lead to the trace, Prometheus
metrics from every process, and no personal data in either."""

from __future__ import annotations

import json
import re

import pytest
import requests

from tests.e2e.conftest import RunningSystem
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, submit, wait_for_status
from tests.support import eventually

pytestmark = pytest.mark.local_only("reads the processes' metrics ports, log files and span files")


def scrape(yiwang: RunningSystem, process: str) -> str:
    return requests.get(f"http://127.0.0.1:{yiwang.metrics_ports[process]}/metrics", timeout=5).text


def sample(text: str, name: str, **labels: str) -> float | None:
    """The value of one sample, matched by name and a subset of its labels."""
    for line in text.splitlines():
        if line.startswith(name + "{") and all(f'{k}="{v}"' in line for k, v in labels.items()):
            return float(line.rsplit(" ", 1)[1])
    return None


def test_every_process_serves_metrics_that_follow_the_case_path(yiwang: RunningSystem, applicant):
    created = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM})
    assert created.status_code == 201
    wait_for_status(yiwang, applicant, created.json()["case_no"], "approved")

    intake = eventually(
        lambda: (
            (text := scrape(yiwang, "intake"))
            and sample(text, "yiwang_entrypoint_calls_total", entrypoint="submit_case", outcome="ok")
            and text
        ),
        what="the submission counted",
    )
    assert sample(intake, "yiwang_entrypoint_seconds_count", entrypoint="submit_case") >= 1
    assert sample(intake, "yiwang_events_published_total", type="case.submitted.v1") >= 1
    assert sample(intake, "yiwang_cases_entering_total", status="submitted") >= 1
    assert sample(
        intake, "yiwang_queue_consumers", queue="evt-approval-case.approved.v1--intake.on_case_approved"
    ) is not None or ("yiwang_queue_messages{" in intake)
    gateway = scrape(yiwang, "gateway")
    assert sample(gateway, "yiwang_entrypoint_calls_total", entrypoint="submit_case", kind="ApiRoute") >= 1
    approval = scrape(yiwang, "approval")
    assert sample(approval, "yiwang_events_consumed_total") >= 1
    notification = eventually(
        lambda: (
            (text := scrape(yiwang, "notification"))
            and sample(text, "yiwang_deliveries_total", channel="sms", status="delivered")
            and text
        ),
        what="a delivered SMS counted",
    )
    assert "yiwang_entrypoint_calls_total" in notification
    for process in ("identity", "catalog"):
        assert "yiwang_entrypoint_seconds_bucket" in scrape(yiwang, process)


def test_an_invalid_submission_counts_as_expected_not_as_an_error(yiwang: RunningSystem, applicant):
    refused = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": {}})
    assert refused.status_code == 422
    # Counted when the worker finishes, just after its reply went out.
    intake = eventually(
        lambda: (
            (text := scrape(yiwang, "intake"))
            and sample(text, "yiwang_entrypoint_calls_total", entrypoint="submit_case", outcome="expected")
            and text
        ),
        what="the refusal counted",
    )
    assert sample(intake, "yiwang_entrypoint_calls_total", entrypoint="submit_case", outcome="error") is None


def test_log_lines_are_json_with_trace_ids_and_no_personal_data(yiwang: RunningSystem, applicant):
    response = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM})
    wait_for_status(yiwang, applicant, response.json()["case_no"], "approved")
    lines = []
    for name in ("gateway", "identity", "catalog", "intake", "approval", "notification"):
        for raw in (yiwang.log_dir / f"{name}.log").read_text(encoding="utf-8").splitlines():
            if raw.startswith("{"):
                lines.append(json.loads(raw))
    assert lines and {line["service"] for line in lines} >= {"gateway", "intake", "notification"}
    assert all({"time", "level", "logger", "message", "trace_id", "span_id"} <= set(line) for line in lines)
    # Intake's line about this very case carries the request's trace id: from a log line to the trace.
    trace_id, case_no = response.headers["X-Trace-Id"], response.json()["case_no"]
    [accepted] = [line for line in lines if line.get("case_no") == case_no and line["message"] == "case submitted"]
    assert accepted["trace_id"] == trace_id and accepted["service"] == "intake" and accepted["span_id"]
    # So does the gateway's access line of the request, written after its span ended.
    [access] = [line for line in lines if line["logger"] == "gateway.access" and line["trace_id"] == trace_id]
    assert '"POST /api/v1/cases" 201 ' in access["message"]
    eventlets = [line for line in lines if line["logger"] == "nameko.web.server" and "HTTP/1.1" in line["message"]]
    assert not eventlets  # eventlet's own access line (no trace id) is off


def test_no_personal_data_in_any_log_or_span(yiwang: RunningSystem, applicant):
    submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM})
    secrets = [applicant["id_number"], applicant["phone"], applicant["password"], applicant["token"]]
    files = [*yiwang.log_dir.glob("*.log"), *yiwang.span_dir.glob("*.jsonl")]
    assert files
    for path in files:
        text = path.read_text(encoding="utf-8")
        for secret in secrets:
            assert secret not in text, f"{path.name} leaks personal data"
        assert not re.search(r"\b[1-9]\d{5}(?:19|20)\d{9}[\dX]\b", text), f"{path.name} holds an id number"
