"""Department review over HTTP: task lists, accept → supplement → resubmit → approve, rejections,
withdrawal, evaluation, and two reviewers racing for one case."""

from __future__ import annotations

import concurrent.futures
import uuid

import pytest
import requests

from services.identity.first_admin import first_admin_password
from tests.e2e.conftest import auth, log_in, sign_up
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM
from tests.e2e.test_documents import upload
from tests.support import citizen, eventually

ID_RENEWAL = "62052400GA-QR-0001"  # 居民身份证换领: no automatic rules, a reviewer decides


@pytest.fixture(scope="module")
def admin(yiwang):
    def login():
        response = requests.post(
            yiwang.url("/api/v1/auth/login"), json={"username": "admin", "password": first_admin_password()}
        )
        return {"token": response.json()["access_token"]} if response.ok else None

    return eventually(login, what="the seeded admin")


def reviewer(yiwang, admin, department="620524GA"):
    username = f"rev{uuid.uuid4().hex[:8]}"
    body = {
        "username": username,
        "name": "审核员",
        "password": "reviewer-pass-1",
        "roles": ["reviewer"],
        "department_code": department,
    }
    assert requests.post(yiwang.url("/api/v1/admin/staff"), json=body, headers=auth(admin)).status_code == 201
    return log_in(yiwang, username, "reviewer-pass-1")


def submit_for_review(yiwang, person) -> str:
    created = requests.post(
        yiwang.url("/api/v1/cases"),
        json={"item_code": ID_RENEWAL, "form": {"reason": "expired"}},
        headers=auth(person),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    return created.json()["case_no"]  # no rules: a reviewer may act on it at once


def case(yiwang, who, case_no):
    return requests.get(yiwang.url(f"/api/v1/cases/{case_no}"), headers=auth(who), timeout=10).json()


def decide(yiwang, who, case_no, **body):
    return requests.post(
        yiwang.url(f"/api/v1/review/cases/{case_no}/decisions"), json=body, headers=auth(who), timeout=10
    )


def post(yiwang, who, path, body=None):
    return requests.post(yiwang.url(path), json=body, headers=auth(who), timeout=10)


def all_tasks(yiwang, staff) -> list[dict]:
    """Every page of the reviewer's task list, in order (other tests fill the same department)."""
    items: list[dict] = []
    for page in range(1, 1000):
        params = {"page": page, "page_size": 100}
        answer = requests.get(yiwang.url("/api/v1/review/tasks"), headers=auth(staff), params=params, timeout=10)
        assert answer.status_code == 200, answer.text
        body = answer.json()
        items += body["items"]
        if page * 100 >= body["total"]:
            return items
    raise AssertionError("the task list does not end")


def task_list_shows(yiwang, staff, case_no, present: bool = True) -> list[dict]:
    """The task list once it shows (or no longer shows) the case: the list is a read model that the
    case's own write brings up to date just after it, so a reader may see the case change first."""

    def check():
        tasks = all_tasks(yiwang, staff)
        # In a tuple, because an empty list is an answer too.
        return (tasks,) if (case_no in {t["case_no"] for t in tasks}) == present else None

    return eventually(check, what=f"the task list {'with' if present else 'without'} {case_no}")[0]


def test_accept_supplement_resubmit_approve_and_evaluate(yiwang, admin):
    person, staff = sign_up(yiwang), reviewer(yiwang, admin)
    case_no = submit_for_review(yiwang, person)

    tasks = task_list_shows(yiwang, staff, case_no)
    task = next(t for t in tasks if t["case_no"] == case_no)
    assert task["status"] == "submitted" and task["overdue"] is False and task["deadline"]
    deadlines = [t["deadline"] for t in tasks]
    assert deadlines == sorted(deadlines)

    accepted = decide(yiwang, staff, case_no, action="accept")
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    asked = decide(
        yiwang, staff, case_no, action="request_supplement", missing_materials=["photo"], comment="照片不清晰"
    )
    assert asked.json()["status"] == "supplement_requested"
    assert decide(yiwang, staff, case_no, action="approve").status_code == 409  # waiting for the applicant

    incomplete = post(yiwang, person, f"/api/v1/cases/{case_no}/supplements", {"materials": []})
    assert incomplete.status_code == 422
    jpeg = b"\xff\xd8\xff\xe0" + bytes(100)
    photo = upload(yiwang, person, jpeg, "photo.jpg", "image/jpeg").json()["document_id"]
    supplement = {"materials": [{"code": "photo", "document_id": photo}]}
    resubmitted = post(yiwang, person, f"/api/v1/cases/{case_no}/supplements", supplement)
    assert resubmitted.status_code == 200 and resubmitted.json()["status"] == "resubmitted"
    assert [(m["code"], m["document_id"]) for m in resubmitted.json()["materials"]] == [("photo", photo)]

    approved = decide(yiwang, staff, case_no, action="approve", comment="符合规定")
    assert approved.status_code == 200
    final = approved.json()
    assert final["status"] == "approved" and final["decision"]["decided_by"] != "auto"
    statuses = [t["status"] for t in final["timeline"]]
    # No automatic rules ran, so none handed the case over: no entry of theirs.
    assert statuses == ["submitted", "accepted", "supplement_requested", "resubmitted", "approved"]
    assert final["decision"]["explanation"] == [] and final["decision"]["rule_set_version"] is None

    def notices():
        inbox = requests.get(yiwang.url("/api/v1/notifications"), headers=auth(person)).json()["items"]
        kinds = {n["type"]: n for n in inbox if n["case_no"] == case_no}
        wanted = {"case.submitted.v1", "case.accepted.v1", "case.supplement_requested.v1", "case.approved.v1"}
        return kinds if wanted <= set(kinds) else None

    inbox = eventually(notices, what="every notice of the case")
    assert "数码照片回执" in inbox["case.supplement_requested.v1"]["body"]  # 一次性告知 lists what is missing

    assert post(yiwang, person, f"/api/v1/cases/{case_no}/evaluation", {"score": 9}).status_code == 422
    evaluated = post(yiwang, person, f"/api/v1/cases/{case_no}/evaluation", {"score": 2, "comment": "等太久"})
    assert evaluated.status_code == 200 and evaluated.json()["evaluation"]["bad"] is True
    assert post(yiwang, person, f"/api/v1/cases/{case_no}/evaluation", {"score": 5}).status_code == 409


def test_a_reviewer_may_accept_a_case_the_moment_it_is_submitted(yiwang, admin):
    person, staff = sign_up(yiwang), reviewer(yiwang, admin)
    for _ in range(5):
        accepted = decide(yiwang, staff, submit_for_review(yiwang, person), action="accept")
        assert accepted.status_code == 200, accepted.text


def test_a_reviewers_decision_keeps_the_rules_that_handed_the_case_over(yiwang, admin):
    # 高龄津贴 for someone registered outside the county: its local_resident rule sends it to review.
    person, staff = sign_up(yiwang, citizen(region="620502")), reviewer(yiwang, admin, "620524MZ")
    created = post(yiwang, person, "/api/v1/cases", {"item_code": ALLOWANCE, "form": GOOD_FORM})
    assert created.status_code == 201, created.text
    case_no = created.json()["case_no"]
    assert decide(yiwang, staff, case_no, action="accept").status_code == 200  # waits for the rules
    approved = decide(yiwang, staff, case_no, action="approve", comment="户籍已迁入，核实无误").json()
    decision = approved["decision"]
    failed = [rule["rule_id"] for rule in decision["explanation"] if rule["result"] != "passed"]
    assert failed == ["local_resident"] and decision["decided_by"] != "auto"
    assert decision["rule_set_version"] == approved["item_version"]
    assert [t["comment"] for t in approved["timeline"]][:2] == [None, "转人工审核"]


def test_rejection_needs_a_reason_and_becomes_the_decision(yiwang, admin):
    person, staff = sign_up(yiwang), reviewer(yiwang, admin)
    case_no = submit_for_review(yiwang, person)
    no_reason = decide(yiwang, staff, case_no, action="reject")
    assert no_reason.status_code == 422
    refused = decide(yiwang, staff, case_no, action="reject", comment="不属于本部门受理范围")  # 不予受理
    assert refused.status_code == 200
    assert refused.json()["decision"] | {"decided_at": None} == refused.json()["decision"] | {
        "outcome": "rejected",
        "reason": "不属于本部门受理范围",
        "decided_at": None,
    }
    assert post(yiwang, person, f"/api/v1/cases/{case_no}/withdrawal").status_code == 409  # already decided


def test_withdrawal_and_invalid_transitions(yiwang, admin):
    person, staff, stranger = sign_up(yiwang), reviewer(yiwang, admin), sign_up(yiwang)
    elsewhere = reviewer(yiwang, admin, "620524MZ")
    case_no = submit_for_review(yiwang, person)

    assert decide(yiwang, staff, case_no, action="approve").status_code == 409  # not accepted yet
    assert decide(yiwang, elsewhere, case_no, action="accept").status_code == 404
    assert post(yiwang, stranger, f"/api/v1/cases/{case_no}/withdrawal").status_code == 404
    assert post(yiwang, person, f"/api/v1/cases/{case_no}/evaluation", {"score": 5}).status_code == 409

    withdrawn = post(yiwang, person, f"/api/v1/cases/{case_no}/withdrawal")
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert post(yiwang, person, f"/api/v1/cases/{case_no}/withdrawal").status_code == 409
    assert decide(yiwang, staff, case_no, action="accept").status_code == 409
    task_list_shows(yiwang, staff, case_no, present=False)
    assert requests.get(yiwang.url("/api/v1/review/tasks"), headers=auth(person)).status_code == 403


def test_two_reviewers_cannot_both_decide(yiwang, admin):
    person = sign_up(yiwang)
    first, second = reviewer(yiwang, admin), reviewer(yiwang, admin)
    case_no = submit_for_review(yiwang, person)
    assert decide(yiwang, first, case_no, action="accept").status_code == 200

    actions = [(first, {"action": "approve"}), (second, {"action": "reject", "comment": "材料不符"})] * 3
    with concurrent.futures.ThreadPoolExecutor(len(actions)) as pool:
        codes = list(pool.map(lambda a: decide(yiwang, a[0], case_no, **a[1]).status_code, actions))
    assert codes.count(200) == 1 and codes.count(409) == len(actions) - 1
    final = case(yiwang, person, case_no)
    assert [t["status"] for t in final["timeline"]].count(final["status"]) == 1


def test_a_command_sent_again_under_its_key_is_answered_not_refused(yiwang, admin):
    # The first answers were lost (the portal's request timed out): the retries carry the same keys.
    person, staff = sign_up(yiwang), reviewer(yiwang, admin)
    case_no = submit_for_review(yiwang, person)

    def accept(key: str) -> requests.Response:
        return requests.post(
            yiwang.url(f"/api/v1/review/cases/{case_no}/decisions"),
            json={"action": "accept"},
            headers={**auth(staff), "Idempotency-Key": key},
            timeout=30,
        )

    first, again = accept("accept-1"), accept("accept-1")
    assert (first.status_code, again.status_code) == (200, 200) and again.json()["status"] == "accepted"
    assert [t["status"] for t in again.json()["timeline"]].count("accepted") == 1  # applied once
    assert accept("accept-2").status_code == 409  # another key: another command, refused as before
    reused = requests.post(
        yiwang.url(f"/api/v1/review/cases/{case_no}/decisions"),
        json={"action": "reject", "comment": "x"},
        headers={**auth(staff), "Idempotency-Key": "accept-1"},
        timeout=30,
    )
    assert reused.status_code == 409 and "different request" in reused.json()["error"]["message"]
