"""The catalog over HTTP: published guides, drafts, versions, validation, search and answers."""

from __future__ import annotations

import requests

from services.identity.first_admin import first_admin_password
from tests.e2e.conftest import auth
from tests.support import eventually

ALLOWANCE = "62052400MZ-GF-0001"
NEW_CODE = "62052400MZ-QT-0098"


def admin_token(yiwang):
    return eventually(lambda: _login(yiwang), what="the seeded admin")


def _login(yiwang):
    response = requests.post(
        yiwang.url("/api/v1/auth/login"), json={"username": "admin", "password": first_admin_password()}
    )
    return {"token": response.json()["access_token"]} if response.ok else None


def seeded(yiwang) -> dict:
    def full():
        page = requests.get(yiwang.url("/api/v1/catalog/items"), params={"page_size": 1}, timeout=10).json()
        return page if page["total"] >= 500 else None

    return eventually(full, timeout=60, what="the seeded catalog")


def guide_of(yiwang, code: str) -> dict:
    guide = requests.get(yiwang.url(f"/api/v1/catalog/items/{code}"), timeout=10).json()
    guide.pop("version")
    return guide


def test_the_published_guide_has_every_element(yiwang):
    seeded(yiwang)
    guide = requests.get(yiwang.url(f"/api/v1/catalog/items/{ALLOWANCE}"), timeout=10).json()
    for element in (
        "item_code",
        "version",
        "name",
        "department_code",
        "item_type",
        "legal_basis",
        "applicant_types",
        "acceptance_conditions",
        "materials",
        "process",
        "legal_days",
        "promised_days",
        "fees",
        "handling_mode",
        "visits_required",
        "consultation_phone",
        "complaint_phone",
        "form_schema",
        "auto_approval",
        "issues_certificate",
    ):
        assert element in guide, element
    departments = requests.get(yiwang.url("/api/v1/catalog/departments"), timeout=10).json()["items"]
    assert len(departments) >= 40 and {"code", "name", "region_code"} <= set(departments[0])


def test_search_in_chinese_with_filters_and_pages(yiwang):
    seeded(yiwang)
    found = requests.get(yiwang.url("/api/v1/catalog/items"), params={"q": "老年人津贴"}, timeout=10).json()
    assert found["items"][0]["name"] == "高龄津贴申领"
    assert set(found["items"][0]) == {
        "item_code",
        "name",
        "department_code",
        "item_type",
        "handling_mode",
        "promised_days",
    }
    filtered = requests.get(
        yiwang.url("/api/v1/catalog/items"),
        params={"item_type": "licensing", "handling_mode": "online", "page_size": 100},
    ).json()
    assert filtered["total"] > 0
    assert {(i["item_type"], i["handling_mode"]) for i in filtered["items"]} == {("licensing", "online")}
    too_big = requests.get(yiwang.url("/api/v1/catalog/items"), params={"page_size": 1000}, timeout=10)
    assert too_big.status_code == 422 and too_big.json()["error"]["details"][0]["field"] == "query.page_size"
    bad_type = requests.get(yiwang.url("/api/v1/catalog/items"), params={"item_type": "bribe"}, timeout=10)
    assert bad_type.status_code == 422


def test_answers_to_questions_in_plain_language(yiwang):
    seeded(yiwang)

    def ask(q):
        return requests.get(yiwang.url("/api/v1/catalog/answers"), params={"q": q}, timeout=10).json()["answers"]

    first = ask("我想办营业执照需要带什么材料")[0]
    assert (first["name"], first["section"]) == ("企业设立登记", "materials")
    assert "企业名称自主申报告知书" in first["text"] and first["score"] > 0
    first = ask("老年人津贴多久能批下来")[0]
    assert (first["name"], first["section"]) == ("高龄津贴申领", "time_limit")
    assert requests.get(yiwang.url("/api/v1/catalog/answers"), timeout=10).status_code == 422  # q is required


def test_drafts_publishing_and_versions(yiwang, applicant):
    seeded(yiwang)
    admin = admin_token(yiwang)
    base = {**guide_of(yiwang, ALLOWANCE), "item_code": NEW_CODE, "name": "困难老人临时补贴"}

    def post(path, body=None, who=admin):
        return requests.post(yiwang.url(path), json=body, headers=auth(who), timeout=10)

    assert post("/api/v1/catalog/items", base, applicant).status_code == 403
    created = post("/api/v1/catalog/items", base)
    assert created.status_code == 201 and created.json()["updated_by"]
    assert post("/api/v1/catalog/items", base).status_code == 409
    assert requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}"), timeout=10).status_code == 404

    edited = requests.put(
        yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}"),
        json={**base, "promised_days": 4},
        headers=auth(admin),
        timeout=10,
    )
    assert edited.status_code == 200 and edited.json()["promised_days"] == 4
    assert (
        requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}/draft"), headers=auth(admin)).json()["promised_days"]
        == 4
    )
    v1 = post(f"/api/v1/catalog/items/{NEW_CODE}/publish")
    assert v1.status_code == 200 and v1.json()["version"] == 1
    # Sent again (its answer lost on the way): the same version, not a second one, and not a 404.
    again = post(f"/api/v1/catalog/items/{NEW_CODE}/publish")
    assert again.status_code == 200 and again.json() == v1.json()
    assert requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}/draft"), headers=auth(admin)).status_code == 404

    # A case keeps the version it was submitted under.
    form = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}
    case = post("/api/v1/cases", {"item_code": NEW_CODE, "form": form}, applicant).json()
    assert case["item_version"] == 1
    requests.put(
        yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}"), json={**base, "promised_days": 2}, headers=auth(admin)
    )
    assert post(f"/api/v1/catalog/items/{NEW_CODE}/publish").json()["version"] == 2
    assert requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}")).json()["promised_days"] == 2
    old = requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}/versions/1")).json()
    assert (old["version"], old["promised_days"]) == (1, 4)
    versions = requests.get(yiwang.url(f"/api/v1/catalog/items/{NEW_CODE}/versions")).json()["items"]
    assert [v["version"] for v in versions] == [2, 1]
    mine = requests.get(yiwang.url(f"/api/v1/cases/{case['case_no']}"), headers=auth(applicant)).json()
    assert mine["item_version"] == 1

    # New submissions take version 2: intake kept version 1, and catalog's announcement made it
    # stale (within moments, not the 60 s an unannounced entry is kept).
    def submitted_version() -> int:
        return post("/api/v1/cases", {"item_code": NEW_CODE, "form": form}, applicant).json()["item_version"]

    assert eventually(lambda: submitted_version() == 2, timeout=10, interval=0.5)


def test_invalid_guides_get_field_details(yiwang):
    seeded(yiwang)
    admin = admin_token(yiwang)
    base = {**guide_of(yiwang, ALLOWANCE), "item_code": "62052400MZ-QT-0097"}

    def create(**changes):
        return requests.post(
            yiwang.url("/api/v1/catalog/items"), json={**base, **changes}, headers=auth(admin), timeout=10
        )

    rule = {"id": "broken", "description": "d", "expression": "applicant.age >=", "on_fail": "reject"}
    response = create(auto_approval={"enabled": True, "rules": [rule]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["field"] == "auto_approval.rules.0.expression"
    assert "broken" in response.json()["error"]["details"][0]["issue"]
    assert create(form_schema={"type": 7}).json()["error"]["details"][0]["field"] == "form_schema"
    assert create(item_code="62-XK-1").json()["error"]["details"][0]["field"] == "item_code"
    assert create(item_type="tax").json()["error"]["details"][0]["field"] == "item_type"
    assert create(promised_days=99, legal_days=10).status_code == 422
    unknown = create(colour="red")
    assert unknown.status_code == 422 and unknown.json()["error"]["details"][0]["field"] == "colour"


WITHDRAWN_CODE = "62052400MZ-QT-0095"


def test_a_withdrawn_item_takes_no_applications_and_its_running_cases_go_on(yiwang, applicant):
    seeded(yiwang)
    admin = admin_token(yiwang)
    name = "高龄老人营养补贴（试点）"
    base = {**guide_of(yiwang, ALLOWANCE), "item_code": WITHDRAWN_CODE, "name": name}
    form = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}

    def post(path, body=None, who=admin):
        return requests.post(yiwang.url(path), json=body, headers=auth(who), timeout=10)

    def submit():
        return post("/api/v1/cases", {"item_code": WITHDRAWN_CODE, "form": form}, applicant)

    def listed() -> list[str]:
        found = requests.get(yiwang.url("/api/v1/catalog/items"), params={"q": name}, timeout=10).json()["items"]
        return [i["item_code"] for i in found]

    assert post("/api/v1/catalog/items", base).status_code == 201
    assert post(f"/api/v1/catalog/items/{WITHDRAWN_CODE}/publish").json()["version"] == 1
    running = submit().json()  # intake now keeps version 1
    assert running["item_version"] == 1 and WITHDRAWN_CODE in listed()

    withdrawal = f"/api/v1/catalog/items/{WITHDRAWN_CODE}/withdrawal"
    assert post(withdrawal, {"reason": "事项已取消"}, applicant).status_code == 403
    missing = post(withdrawal, {})
    assert missing.status_code == 422
    assert missing.json()["error"]["code"] == "validation_failed"
    assert [d["field"] for d in missing.json()["error"]["details"]] == ["reason"]
    done = post(withdrawal, {"reason": "事项已取消，并入“老年人补贴一件事”"})
    assert done.status_code == 200
    assert (done.json()["item_code"], done.json()["version"]) == (WITHDRAWN_CODE, 1)

    def audited() -> list[int]:
        trail = requests.get(yiwang.url("/api/v1/admin/audit?page_size=100"), headers=auth(admin), timeout=10)
        action = "POST /api/v1/catalog/items/<item_code>/withdrawal"
        return [
            e["status"]
            for e in trail.json()["items"]
            if e["action"] == action and e["target"] == {"item_code": WITHDRAWN_CODE}
        ]

    assert 200 in eventually(audited, what="the withdrawal in the audit trail")

    gone = requests.get(yiwang.url(f"/api/v1/catalog/items/{WITHDRAWN_CODE}"), timeout=10)
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "not_found"
    assert gone.json()["error"]["details"] == [{"field": "item_code", "issue": "withdrawn"}]
    assert "老年人补贴一件事" in gone.json()["error"]["message"]
    assert WITHDRAWN_CODE not in listed()
    # Intake hears of it within moments (not the 60 s an unannounced entry is kept).
    # (The body, not the response: a 404 response is falsy.)
    refused = eventually(lambda: (r := submit()).status_code == 404 and r.json(), timeout=10, interval=0.5)
    assert refused["error"]["code"] == "not_found" and "老年人补贴一件事" in refused["error"]["message"]
    # What was submitted before goes on under its version, which stays readable.
    mine = requests.get(yiwang.url(f"/api/v1/cases/{running['case_no']}"), headers=auth(applicant), timeout=10)
    assert mine.status_code == 200 and mine.json()["item_version"] == 1
    assert requests.get(yiwang.url(f"/api/v1/catalog/items/{WITHDRAWN_CODE}/versions/1"), timeout=10).ok
    assert post(withdrawal, {"reason": "again"}).status_code == 409
    assert post("/api/v1/catalog/items/62052400MZ-QT-0094/withdrawal", {"reason": "x"}).status_code == 404

    # A new version brings it back.
    edited = requests.put(yiwang.url(f"/api/v1/catalog/items/{WITHDRAWN_CODE}"), json=base, headers=auth(admin))
    assert edited.status_code == 200
    assert post(f"/api/v1/catalog/items/{WITHDRAWN_CODE}/publish").json()["version"] == 2
    assert WITHDRAWN_CODE in listed()
    assert eventually(lambda: (r := submit()).status_code == 201 and r.json(), timeout=10)["item_version"] == 2
