"""The load run's verdict (loadtests/slo.py) on made-up figures: what it cannot see must
not pass as met."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from loadtests import slo  # not shapes: importing Locust monkey-patches the test process with gevent


def entry(requests: int, p95: float = 50, p99: float = 80, failures: int = 0) -> SimpleNamespace:
    percentiles = {0.5: 20, 0.95: p95, 0.99: p99}
    return SimpleNamespace(
        num_requests=requests,
        num_failures=failures,
        fail_ratio=failures / requests if requests else 0.0,
        total_rps=1.0,
        get_response_time_percentile=lambda share: percentiles[share],
    )


def stats(**by_name: SimpleNamespace) -> SimpleNamespace:
    return SimpleNamespace(
        entries={(name, "POST"): e for name, e in by_name.items()}, total=SimpleNamespace(fail_ratio=0.0)
    )


BOTH = {"/api/v1/cases [秒批]": entry(40), "/api/v1/cases [reviewed]": entry(20)}
MEASURED = {"sampled": 30, "undecided": 0, "unnotified": 0, "decided_p95_s": 0.1, "notified_p95_s": 0.2}


def test_a_run_that_measured_everything_within_limits_passes():
    assert slo.evaluate(stats(**BOTH), MEASURED, 1.0)[1] == []


def test_what_the_run_did_not_measure_is_a_breach_unless_allowed():
    only_auto = stats(**{"/api/v1/cases [秒批]": entry(40)})
    assert slo.evaluate(only_auto, MEASURED, 1.0)[1] == [
        "/api/v1/cases [reviewed]: not measured (no request in the run)"
    ]
    nothing_sampled = {**MEASURED, "sampled": 0, "decided_p95_s": None, "notified_p95_s": None}
    assert slo.evaluate(stats(**BOTH), nothing_sampled, 1.0)[1] == [
        "end to end: not measured (no automatically decided case sampled)"
    ]
    assert slo.evaluate(only_auto, nothing_sampled, 1.0, allow_unmeasured=True)[1] == []


def test_an_endpoint_over_the_error_ratio_is_a_breach_however_many_reads_dilute_it():
    # 9 failed submissions in 800: 1.1% of submissions, 0.09% of a run of 10,200 requests.
    failing = stats(
        **{
            "/api/v1/cases [秒批]": entry(800, failures=9),
            "/api/v1/cases [reviewed]": entry(400),
            "/api/v1/catalog/items": entry(9000),
        }
    )
    failing.total.fail_ratio = 9 / 10200
    assert slo.evaluate(failing, MEASURED, 1.0)[1] == ["POST /api/v1/cases [秒批]: error ratio 0.0112 over 0.001"]


def test_cases_decided_but_never_notified_are_a_breach_not_left_out():
    # Percentiles over the notified ones alone looked fine (or were absent) and the run passed.
    silent = {**MEASURED, "unnotified": 30, "notified_p95_s": None}
    assert slo.evaluate(stats(**BOTH), silent, 1.0)[1] == [
        "30 of 30 sampled cases were decided but not notified in time"
    ]


class Inbox:
    """An applicant's notifications, newest first, answered a page at a time."""

    def __init__(self, notes):
        self.notes, self.pages = notes, []

    def get(self, url, headers, timeout):
        page = int(url.split("page=")[1].split("&")[0])
        self.pages.append(page)
        items = self.notes[(page - 1) * 100 : page * 100]
        return SimpleNamespace(json=lambda: {"items": items})


def test_a_decision_notice_is_found_past_the_first_page_and_the_search_stops_at_the_submission():
    now = datetime(2026, 11, 27, 8, tzinfo=UTC)
    later = [
        {"case_no": f"C-{n}", "type": "case.submitted.v1", "created_at": (now - timedelta(seconds=n)).isoformat()}
        for n in range(150)
    ]
    ours = {"case_no": "C-OLD", "type": "case.approved.v1", "created_at": (now - timedelta(hours=1)).isoformat()}
    inbox = Inbox([*later, ours])
    assert slo.decision_notice(inbox, "http://x", {}, "C-OLD", now - timedelta(hours=2)) == ours
    assert inbox.pages == [1, 2]
    # Not there: the search ends once the inbox is older than the submission, not at its end.
    inbox = Inbox([*later, *later, *later])
    assert slo.decision_notice(inbox, "http://x", {}, "C-NONE", now - timedelta(seconds=50)) is None
    assert inbox.pages == [1]


def test_a_sustained_runs_latency_is_reported_by_the_minute_each_submission_was_due():
    from loadtests.bench_ceiling import by_minute  # imports no Locust

    started = 1000.0
    sent_at = [1000.0, 1030.0, 1059.9, 1060.0, 1110.0]
    latencies = [0.05, 0.07, 0.09, 2.0, 0.1]
    assert by_minute(started, sent_at, latencies) == [
        {"minute": 0, "p50_ms": pytest.approx(70.0), "p99_ms": pytest.approx(90.0)},
        {"minute": 1, "p50_ms": pytest.approx(1050.0), "p99_ms": pytest.approx(2000.0)},
    ]


def test_a_sampled_case_that_cannot_be_read_is_a_miss_and_the_check_has_one_deadline(monkeypatch):
    # An expired token (401) raised KeyError and no summary was written; and each case undecided
    # waited its own 30 s, hours for a sample of 300.
    import requests

    class Refusing:
        def get(self, url, headers, timeout):
            def refuse():
                raise requests.HTTPError("401 Client Error")

            return SimpleNamespace(status_code=401, raise_for_status=refuse, json=lambda: {"error": {}})

    clock = iter(range(0, 10_000, 5))  # seconds: each read takes 5
    monkeypatch.setattr(slo.requests, "Session", Refusing)
    monkeypatch.setattr(slo.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(slo.time, "sleep", lambda seconds: None)
    monkeypatch.setattr(slo, "_sample", [(f"C-{n}", {}, None) for n in range(300)])
    result = slo.end_to_end("http://x", wait=30)
    assert (result["sampled"], result["undecided"], result["decided_p95_s"]) == (300, 300, None)
    assert next(clock) < 300 * 5 * 2  # past the one deadline, each case is read once, not for 30 s
    assert "300 of 300 sampled cases were not decided in time" in slo.evaluate(stats(**BOTH), result, 1.0)[1]


def test_a_sampled_applicant_whose_token_expired_is_signed_in_again(monkeypatch):
    # A soak outlives the 15-minute tokens: the check after it read every sampled case as a 401.
    now = datetime(2026, 11, 27, 8, tzinfo=UTC)
    case = {
        "case_no": "C-1",
        "submitted_at": now.isoformat(),
        "decision": {"decided_at": (now + timedelta(seconds=0.1)).isoformat()},
    }
    note = {"case_no": "C-1", "type": "case.approved.v1", "created_at": (now + timedelta(seconds=0.3)).isoformat()}

    class System:
        signed_in: list[str] = []

        def post(self, url, json, timeout):
            self.signed_in.append(json["username"])
            return SimpleNamespace(raise_for_status=lambda: None, json=lambda: {"access_token": "fresh"})

        def get(self, url, headers, timeout):
            if headers.get("Authorization") != "Bearer fresh":
                return SimpleNamespace(status_code=401, raise_for_status=lambda: None, json=lambda: {})
            body = case if "/cases/" in url else {"items": [note]}
            return SimpleNamespace(status_code=200, raise_for_status=lambda: None, json=lambda: body)

    monkeypatch.setattr(slo.requests, "Session", System)
    monkeypatch.setattr(slo, "_sample", [("C-1", {"Authorization": "Bearer expired"}, ("id-1", "pw"))])
    result = slo.end_to_end("http://x", wait=30)
    assert (result["undecided"], result["unnotified"]) == (0, 0) and System.signed_in == ["id-1"]
    assert result["notified_p95_s"] == pytest.approx(0.3)
