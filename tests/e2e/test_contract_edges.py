"""api-v1's conventions at their edges, as a portal or an outside test suite meets them: what JSON
can say but no store keeps, unknown items, blank filters, guides sent back as read, registration
errors named as written, lists paged on request, wrong methods and refresh tokens."""

from __future__ import annotations

import pytest
import requests

from tests.e2e.conftest import RunningSystem, auth
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, submit
from tests.e2e.test_catalog import admin_token, guide_of, seeded
from tests.e2e.test_hostile_input import CASES, assert_refused, post
from tests.support import citizen

SCHEMA_ITEM = "62052400MZ-QT-0090"  # a guide whose form schema is full JSON Schema
ROUND_TRIP_ITEM = "62052400MZ-QT-0091"


def my_case_count(yiwang: RunningSystem, person: dict) -> int:
    return requests.get(yiwang.url(CASES), headers=auth(person), timeout=10).json()["total"]


@pytest.mark.parametrize(
    ("raw_form", "status", "field"),
    [
        ('{"bank_account": "6222020200112233445", "n": 9223372036854775808}', 422, "form.n"),
        ('{"bank_account": "6222020200112233445", "n": 1e400}', 422, "form.n"),
        ('{"bank_account": "6222020200112233445", "a\\u0000b": 1}', 422, "form"),
        ('{"bank_account": "\\ud800"}', 400, None),
        ('{"bank_account": "6222020200112233445", "m": [[1, 2]]}', 422, "form"),
    ],
    ids=["integer-past-64-bits", "number-past-double", "nul-in-a-name", "unpaired-surrogate", "list-in-a-list"],
)
def test_what_no_store_keeps_is_the_clients_error(yiwang: RunningSystem, applicant, raw_form, status, field):
    # Each was a 500 (the store refused it deep inside intake); nothing may be stored either way.
    body = ('{"item_code": "' + ALLOWANCE + '", "form": ' + raw_form + "}").encode()
    error = assert_refused(post(yiwang, applicant, CASES, body), status)
    if field:
        assert [detail["field"] for detail in error["details"]] == [field]
    assert my_case_count(yiwang, applicant) == 0


def test_an_unknown_item_is_not_found_whatever_its_code_looks_like(yiwang: RunningSystem, applicant):
    # Empty, blank (stripped to empty) and too long for any item: unknown all the same.
    for code in ("NOPE-1", "62052400MZ-QT-9999", "", "   ", "X" * 65, "62052400MZ-QT-9999" * 50):
        response = submit(yiwang, applicant, {"item_code": code, "form": GOOD_FORM})
        assert response.status_code == 404, (code, response.text)
        assert response.json()["error"]["code"] == "not_found"


def test_blank_filters_are_filters_not_given(yiwang: RunningSystem, applicant):
    seeded(yiwang)
    query = "q=&department=&item_type=&handling_mode="
    everything = requests.get(yiwang.url(f"/api/v1/catalog/items?{query}"), timeout=10)
    assert everything.status_code == 200, everything.text
    assert everything.json()["total"] >= 500
    for path in (f"{CASES}?status=", "/api/v1/notifications?unread=&page="):
        response = requests.get(yiwang.url(path), headers=auth(applicant), timeout=10)
        assert response.status_code == 200, (path, response.text)
    misspelt = requests.get(yiwang.url(f"{CASES}?stauts="), headers=auth(applicant), timeout=10)
    assert_refused(misspelt, 422)


def test_a_guide_read_is_sent_back_as_the_next_draft(yiwang: RunningSystem):
    admin = admin_token(yiwang)
    seeded(yiwang)
    created = requests.post(
        yiwang.url("/api/v1/catalog/items"),
        json={**guide_of(yiwang, ALLOWANCE), "item_code": ROUND_TRIP_ITEM, "name": "往返测试事项"},
        headers=auth(admin),
        timeout=10,
    )
    assert created.status_code == 201, created.text
    published = requests.post(yiwang.url(f"/api/v1/catalog/items/{ROUND_TRIP_ITEM}/publish"), headers=auth(admin))
    assert published.status_code == 200, published.text
    read = requests.get(yiwang.url(f"/api/v1/catalog/items/{ROUND_TRIP_ITEM}"), timeout=10).json()
    assert read["version"] == 1
    edited = requests.put(
        yiwang.url(f"/api/v1/catalog/items/{ROUND_TRIP_ITEM}"),
        json={**read, "promised_days": 1},  # as read: its version included
        headers=auth(admin),
        timeout=10,
    )
    assert edited.status_code == 200, edited.text
    assert edited.json()["promised_days"] == 1


def test_a_form_schema_in_full_json_schema_works_end_to_end(yiwang: RunningSystem, applicant):
    admin = admin_token(yiwang)
    seeded(yiwang)
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"account": {"type": "string", "pattern": "^[0-9]{16,19}$"}},
        "properties": {"bank_account": {"$ref": "#/$defs/account"}, "contact_phone": {"type": "string"}},
        "required": ["bank_account"],
    }
    guide = {**guide_of(yiwang, ALLOWANCE), "item_code": SCHEMA_ITEM, "name": "表单模式测试事项"}
    guide.update(form_schema=schema, materials=[], auto_approval={"enabled": False, "rules": []})
    created = requests.post(yiwang.url("/api/v1/catalog/items"), json=guide, headers=auth(admin), timeout=10)
    assert created.status_code == 201, created.text
    published = requests.post(yiwang.url(f"/api/v1/catalog/items/{SCHEMA_ITEM}/publish"), headers=auth(admin))
    assert published.status_code == 200, published.text
    assert requests.get(yiwang.url(f"/api/v1/catalog/items/{SCHEMA_ITEM}"), timeout=10).json()["form_schema"] == schema
    wrong = submit(yiwang, applicant, {"item_code": SCHEMA_ITEM, "form": {"bank_account": "12"}})
    assert_refused(wrong, 422)  # the $ref'd pattern applies
    assert submit(yiwang, applicant, {"item_code": SCHEMA_ITEM, "form": GOOD_FORM}).status_code == 201


def test_registration_errors_name_the_fields_as_written(yiwang: RunningSystem):
    body = {**citizen(), "phone": "123", "password": "short"}
    error = assert_refused(requests.post(yiwang.url("/api/v1/auth/register"), json=body, timeout=10), 422)
    assert {detail["field"] for detail in error["details"]} == {"phone", "password"}
    untyped = {k: v for k, v in citizen().items() if k != "account_type"}
    error = assert_refused(requests.post(yiwang.url("/api/v1/auth/register"), json=untyped, timeout=10), 422)
    assert [detail["field"] for detail in error["details"]] == ["account_type"]


def test_a_whole_list_is_paged_when_asked(yiwang: RunningSystem, applicant):
    whole = requests.get(yiwang.url("/api/v1/catalog/departments"), timeout=10).json()
    assert set(whole) == {"items"} and len(whole["items"]) >= 40
    page = requests.get(yiwang.url("/api/v1/catalog/departments?page=2&page_size=5"), timeout=10).json()
    assert page == {"items": whole["items"][5:10], "total": len(whole["items"]), "page": 2, "page_size": 5}
    mine = requests.get(yiwang.url("/api/v1/me/certificates?page=1"), headers=auth(applicant), timeout=10)
    assert mine.status_code == 200 and mine.json()["total"] == 0


def test_a_wrong_method_is_405_with_what_is_allowed(yiwang: RunningSystem):
    response = requests.delete(yiwang.url("/api/v1/catalog/departments"), timeout=10)
    error = assert_refused(response, 405)
    assert error["code"] == "malformed_request"
    assert "GET" in response.headers["Allow"]


def test_any_refresh_token_not_ours_is_unauthenticated(yiwang: RunningSystem):
    for token in ("short", "x" * 300):
        response = requests.post(yiwang.url("/api/v1/auth/refresh"), json={"refresh_token": token}, timeout=10)
        assert_refused(response, 401)
