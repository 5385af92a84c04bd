"""The load run's verdict (loadtests/slo.py) on made-up figures: what it cannot see must
not pass as met."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest

from loadtests import slo  # not shapes: importing Locust monkey-patches the test process with gevent


def entry(requests: int, p95: float = 50, p99: float = 80) -> SimpleNamespace:
    percentiles = {0.5: 20, 0.95: p95, 0.99: p99}
    return SimpleNamespace(
        num_requests=requests,
        num_failures=0,
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
