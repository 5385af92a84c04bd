"""The Locust suite itself, for 20 seconds against the running system, so it cannot rot:
applicants and a reviewer run (six users: the supervisor's weight brings none), the SLO check runs
and writes its summary, nothing fails."""

from __future__ import annotations

import json

from loadtests.run import locust
from tests.e2e.conftest import ARTIFACTS, RunningSystem


def test_the_load_test_suite_runs_clean_for_twenty_seconds(yiwang: RunningSystem):
    results = ARTIFACTS / "loadtest-smoke"
    # Latency objectives x20: this checks the suite, not the speed of a machine that also runs tests.
    # Six users for 20 s may not submit to both kinds of item: what they did not measure passes here.
    env = {"YIWANG_SLO_SCALE": "20", "YIWANG_SLO_ALLOW_UNMEASURED": "1"}
    code = locust(yiwang.base_url, "none", 6, 20, results, env)
    summary = json.loads((results / "summary.json").read_text(encoding="utf-8"))
    assert summary["failures"] == 0, (results / "summary.md").read_text(encoding="utf-8")
    endpoints = {row["endpoint"] for row in summary["endpoints"]}
    assert {"POST /api/v1/auth/register", "POST /api/v1/auth/login", "GET /api/v1/cases"} <= endpoints
    assert summary["requests"] > 30
    assert code == 0, summary["breaches"]
    assert (results / "report.html").exists() and (results / "stats_stats.csv").exists()
