"""A case submitted over HTTP flows through all five services and comes back decided, in one trace."""

from __future__ import annotations

import json
from datetime import date

import pytest
import requests

from services.identity.idnumbers import age_on
from tests.e2e.conftest import RunningSystem, auth
from tests.support import citizen, eventually

ALLOWANCE = "62052400MZ-GF-0001"  # 高龄津贴申领: decided automatically from age and region
GOOD_FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}


def submit(yiwang: RunningSystem, person: dict, body: dict, **headers: str) -> requests.Response:
    return requests.post(yiwang.url("/api/v1/cases"), json=body, headers={**auth(person), **headers}, timeout=15)


def wait_for_status(yiwang: RunningSystem, person: dict, case_no: str, status: str) -> dict:
    def decided() -> dict | None:
        case = requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(person), timeout=10).json()
        return case if case.get("status") == status else None

    return eventually(decided, what=f"{case_no} to become {status}")


def spans_of(yiwang: RunningSystem, trace_id: str) -> list[dict]:
    spans = []
    for path in yiwang.span_dir.glob("*.jsonl"):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                span = json.loads(line)
                if span["trace_id"] == trace_id:
                    spans.append(span)
    return spans


def test_seeded_item_has_form_schema_and_rules(yiwang: RunningSystem):
    item = eventually(
        lambda: (r := requests.get(yiwang.url(f"/api/v1/catalog/items/{ALLOWANCE}"), timeout=10)).ok and r.json(),
        what="the seeded item",
    )
    assert item["version"] >= 1
    assert item["form_schema"]["required"] == ["bank_account", "contact_phone"]
    assert item["auto_approval"]["enabled"] is True


@pytest.mark.local_only("reads the span files (in containers spans go to Jaeger)")
def test_submitted_case_is_approved_automatically_with_notification_in_one_trace(yiwang, applicant):
    response = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM})
    assert response.status_code == 201, response.text
    created = response.json()
    trace_id = response.headers["X-Trace-Id"]
    assert len(trace_id) == 32
    assert created["status"] == "submitted" and created["item_version"] >= 1

    case = wait_for_status(yiwang, applicant, created["case_no"], "approved")
    assert case["decision"]["decided_by"] == "auto"
    assert case["decision"]["outcome"] == "approved"
    explained = {r["rule_id"]: r for r in case["decision"]["explanation"]}
    assert explained["age_80"]["result"] == "passed"
    age = age_on(applicant["id_number"], date.today())
    assert age >= 80
    assert explained["age_80"]["inputs"] == [{"name": "applicant.age", "value": age}]
    assert [t["status"] for t in case["timeline"]] == ["submitted", "approved"]
    assert case["timeline"][-1]["at"] == case["decision"]["decided_at"]  # one moment, written alike
    assert case["applicant"]["name"] == applicant["name"]
    assert case["deadline"]

    def messages() -> list | None:
        inbox = requests.get(yiwang.url("/api/v1/notifications"), headers=auth(applicant), timeout=10).json()
        types = sorted(n["type"] for n in inbox["items"] if n["case_no"] == created["case_no"])
        return inbox["items"] if types == ["case.approved.v1", "case.submitted.v1"] else None

    inbox = eventually(messages, what="both notifications")
    approved = next(n for n in inbox if n["type"] == "case.approved.v1")
    assert "准予" in approved["title"] and created["case_no"] in approved["body"]

    def traced_services() -> set | None:
        services = {s["service"] for s in spans_of(yiwang, trace_id)}
        wanted = {"yiwang-gateway", "yiwang-intake", "yiwang-approval", "yiwang-notification"}
        return services if wanted <= services else None

    services = eventually(traced_services, what="spans from gateway, intake, approval and notification")
    assert {"yiwang-catalog", "yiwang-identity"} & services  # the RPCs made on the way are in it too


def test_rule_that_fails_with_reject_rejects_with_reason(yiwang: RunningSystem):
    young = citizen(born=date(1990, 1, 1))
    requests.post(yiwang.url("/api/v1/auth/register"), json=young, timeout=10).raise_for_status()
    token = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": young["phone"], "password": young["password"]}, timeout=10
    ).json()["access_token"]
    person = {"token": token}
    created = submit(yiwang, person, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()
    case = wait_for_status(yiwang, person, created["case_no"], "rejected")
    assert case["decision"]["reason"] == "不符合条件：申请人年满80周岁"
    inbox = eventually(
        lambda: [
            n
            for n in requests.get(yiwang.url("/api/v1/notifications"), headers=auth(person), timeout=10).json()["items"]
            if n["type"] == "case.rejected.v1"
        ],
        what="the rejection notice",
    )
    assert "原因：不符合条件：申请人年满80周岁" in inbox[0]["body"]


def test_bad_submissions_are_refused_and_store_nothing(yiwang, applicant):
    headers = auth(applicant)

    def my_case_count() -> int:
        return requests.get(yiwang.url("/api/v1/cases"), headers=headers, timeout=10).json()["total"]

    before = my_case_count()

    malformed = requests.post(
        yiwang.url("/api/v1/cases"),
        data="{not json",
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )
    assert malformed.status_code == 400
    assert malformed.json()["error"]["code"] == "malformed_request"
    assert malformed.headers["X-Trace-Id"] == malformed.json()["error"]["trace_id"]

    unknown_field = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM, "extra": 1})
    assert unknown_field.status_code == 422
    assert unknown_field.json()["error"]["details"][0]["field"] == "extra"

    wrong_type = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": "not an object"})
    assert wrong_type.status_code == 422
    assert wrong_type.json()["error"]["details"][0]["field"] == "form"

    unknown_item = submit(yiwang, applicant, {"item_code": "62052400MZ-GF-9999", "form": {}})
    assert unknown_item.status_code == 404
    assert unknown_item.json()["error"]["code"] == "not_found"

    invalid_form = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": {"bank_account": "12"}})
    assert invalid_form.status_code == 422
    fields = {d["field"] for d in invalid_form.json()["error"]["details"]}
    assert fields == {"form.bank_account", "form.contact_phone"}

    assert my_case_count() == before


def test_access_rules(yiwang, applicant):
    assert requests.get(yiwang.url("/api/v1/cases"), timeout=10).status_code == 401
    bad_token = requests.get(yiwang.url("/api/v1/me"), headers={"Authorization": "Bearer x.y.z"}, timeout=10)
    assert bad_token.status_code == 401 and bad_token.json()["error"]["code"] == "unauthenticated"
    me = requests.get(yiwang.url("/api/v1/me"), headers=auth(applicant), timeout=10).json()
    assert me["roles"] == ["applicant"] and me["assurance_level"] == 1

    created = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM}).json()
    stranger = citizen()
    requests.post(yiwang.url("/api/v1/auth/register"), json=stranger, timeout=10).raise_for_status()
    token = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": stranger["id_number"], "password": stranger["password"]}
    ).json()["access_token"]
    other = requests.get(
        yiwang.url(f"/api/v1/cases/{created['case_no']}"), headers={"Authorization": f"Bearer {token}"}
    )
    assert other.status_code == 404


def test_registration_errors(yiwang, applicant):
    again = requests.post(yiwang.url("/api/v1/auth/register"), json={**citizen(), "id_number": applicant["id_number"]})
    assert again.status_code == 409
    assert again.json()["error"]["details"] == [{"field": "id_number", "issue": "already registered"}]

    bad = {**citizen(), "id_number": applicant["id_number"][:17] + ("0" if applicant["id_number"][17] != "0" else "1")}
    invalid = requests.post(yiwang.url("/api/v1/auth/register"), json=bad)
    assert invalid.status_code == 422
    assert invalid.json()["error"]["details"][0]["field"] == "id_number"

    wrong = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": applicant["id_number"], "password": "nope-nope"}
    )
    unknown = requests.post(yiwang.url("/api/v1/auth/login"), json={"username": "nobody", "password": "nope-nope"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


def test_health_unknown_paths_and_trace_context(yiwang: RunningSystem):
    assert requests.get(yiwang.url("/healthz"), timeout=10).status_code == 200
    ready = requests.get(yiwang.url("/readyz"), timeout=10)
    assert ready.status_code == 200 and set(ready.json()["checks"].values()) == {"ok"}

    missing = requests.get(yiwang.url("/api/v1/nothing-here"), timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found" and len(missing.headers["X-Trace-Id"]) == 32

    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    traced = requests.get(
        yiwang.url("/api/v1/catalog/departments"),
        headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"},
        timeout=10,
    )
    assert traced.headers["X-Trace-Id"] == trace_id
    assert len(traced.json()["items"]) >= 4
    for method, path in (("GET", "/api/v1/nothing-here"), ("DELETE", "/api/v1/cases")):  # 404, 405
        unmatched = requests.request(
            method, yiwang.url(path), headers={"traceparent": f"00-{trace_id}-00f067aa0ba902b7-01"}, timeout=10
        )
        assert unmatched.headers["X-Trace-Id"] == unmatched.json()["error"]["trace_id"] == trace_id

    spec = requests.get(yiwang.url("/openapi.json"), timeout=10).json()
    assert spec["openapi"].startswith("3.1") and "/api/v1/cases/{case_no}" in spec["paths"]


def test_idempotent_retries_give_the_same_case(yiwang, applicant):
    body = {"item_code": ALLOWANCE, "form": GOOD_FORM}
    key = {"Idempotency-Key": f"retry-{applicant['user_id']}"}
    first = submit(yiwang, applicant, body, **key)
    assert first.status_code == 201
    again = submit(yiwang, applicant, body, **key)
    assert again.status_code == 200 and again.json() == first.json()
    other_body = submit(yiwang, applicant, {**body, "form": {**GOOD_FORM, "contact_phone": "13900139000"}}, **key)
    assert other_body.status_code == 409 and other_body.json()["error"]["code"] == "conflict"

    # Concurrent retries of one key: exactly one case.
    import concurrent.futures

    race = {"Idempotency-Key": f"race-{applicant['user_id']}"}
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: submit(yiwang, applicant, body, **race), range(8)))
    assert sorted(r.status_code for r in answers) == [200] * 7 + [201]
    assert len({r.json()["case_no"] for r in answers}) == 1
    mine = requests.get(yiwang.url("/api/v1/cases"), headers=auth(applicant), params={"page_size": 100}).json()
    numbers = [c["case_no"] for c in mine["items"]]
    assert numbers.count(first.json()["case_no"]) == 1 and numbers.count(answers[0].json()["case_no"]) == 1
