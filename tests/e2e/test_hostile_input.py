"""Hostile input, sent as an attacker would: always a clear 4xx in the contract's error shape,
never a 5xx, and nothing stored that should not be."""

from __future__ import annotations

import json
import socket

import pytest
import requests

from tests.e2e.conftest import RunningSystem, auth
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM

CASES = "/api/v1/cases"


def post(yiwang: RunningSystem, person: dict, path: str, data: bytes, content_type: str = "application/json"):
    headers = {**auth(person), "Content-Type": content_type}
    return requests.post(yiwang.url(path), data=data, headers=headers, timeout=30)


def assert_refused(response: requests.Response, *statuses: int) -> dict:
    assert response.status_code in statuses, (response.status_code, response.text[:300])
    error = response.json()["error"]
    assert error["code"] and error["message"] and "Traceback" not in response.text
    return error


@pytest.mark.parametrize(
    "form",
    [
        {"bank_account": {"$gt": ""}, "contact_phone": "13800138000"},  # an operator where a value goes
        {"bank_account": "6222020200112233445", "contact_phone": "13800138000", "$where": "sleep(1000)"},
        {"bank_account": "6222020200112233445", "contact_phone": "13800138000", "a.b": "dotted key"},
        {"bank_account": "6222020200112233445", "contact_phone": {"$ne": None}},
    ],
)
def test_operators_and_odd_keys_in_a_form_are_refused(yiwang: RunningSystem, applicant, form):
    response = post(yiwang, applicant, CASES, json.dumps({"item_code": ALLOWANCE, "form": form}).encode())
    assert_refused(response, 422)
    mine = requests.get(yiwang.url(CASES), headers=auth(applicant), timeout=10).json()
    assert mine["total"] == 0  # nothing stored


def test_an_operator_in_place_of_the_item_code_is_refused(yiwang: RunningSystem, applicant):
    body = json.dumps({"item_code": {"$gt": ""}, "form": GOOD_FORM}).encode()
    assert_refused(post(yiwang, applicant, CASES, body), 422)


def test_deeply_nested_json_is_refused(yiwang: RunningSystem, applicant):
    nested = "[" * 5000 + "]" * 5000
    body = (
        json.dumps({"item_code": ALLOWANCE, "form": {}})
        .encode()
        .replace(b"{}", b'{"bank_account": ' + nested.encode() + b"}")
    )
    assert_refused(post(yiwang, applicant, CASES, body), 400, 422)


def test_invalid_utf8_is_refused(yiwang: RunningSystem, applicant):
    body = b'{"item_code": "' + ALLOWANCE.encode() + b'", "form": {"bank_account": "\xff\xfe\xfa"}}'
    assert_refused(post(yiwang, applicant, CASES, body), 400)


def test_an_oversized_body_is_refused(yiwang: RunningSystem, applicant):
    body = json.dumps({"item_code": ALLOWANCE, "form": {"note": "x" * (2 * 1024 * 1024)}}).encode()
    assert_refused(post(yiwang, applicant, CASES, body), 413)


def test_a_long_query_is_refused_naming_its_parameter(yiwang: RunningSystem):
    # About 11 KB, past eventlet's own limit of 8 KiB (a bare 414 there): the route's checks answer.
    response = requests.get(yiwang.url("/api/v1/catalog/items"), params={"q": "高龄" * 600}, timeout=10)
    error = assert_refused(response, 422)
    assert [detail["field"] for detail in error["details"]] == ["query.q"]


@pytest.mark.parametrize(
    "headers",
    [{"X-Padding": "a" * 9000}, {f"X-Padding-{n}": "1" for n in range(120)}],
    ids=["a header line over 8 KiB", "more than 100 headers"],
)
def test_headers_the_server_cannot_read_are_refused_in_the_contracts_shape(yiwang: RunningSystem, headers):
    # Refused before any handler runs: eventlet answered these itself, with no JSON and no trace id.
    response = requests.get(yiwang.url("/api/v1/catalog/items"), headers=headers, timeout=10)
    error = assert_refused(response, 400)
    assert error["code"] == "malformed_request" and response.headers["X-Trace-Id"] == error["trace_id"]


def test_a_wrong_content_type_is_refused(yiwang: RunningSystem, applicant):
    body = json.dumps({"item_code": ALLOWANCE, "form": GOOD_FORM}).encode()
    assert_refused(post(yiwang, applicant, CASES, body, "text/plain"), 400, 415)


@pytest.mark.parametrize(
    "query", ["page_size=100000", "page_size=0", "page=-1", "page=abc", "page=99999999999999999999"]
)
def test_silly_paging_is_refused(yiwang: RunningSystem, applicant, query):
    response = requests.get(yiwang.url(f"{CASES}?{query}"), headers=auth(applicant), timeout=10)
    error = assert_refused(response, 422)
    assert error["details"] and error["details"][0]["field"].startswith("query.")


def test_a_document_name_with_a_path_is_kept_out_of_the_store(yiwang: RunningSystem, applicant):
    png = bytes.fromhex(
        "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
        "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
    )
    files = {"file": ("../../../../etc/passwd", png, "image/png")}
    response = requests.post(yiwang.url("/api/v1/documents"), files=files, headers=auth(applicant), timeout=10)
    assert response.status_code == 201
    assert "passwd" not in json.dumps(response.json()) and ".." not in json.dumps(response.json())


def test_a_forged_content_type_is_caught_from_the_bytes(yiwang: RunningSystem, applicant):
    files = {"file": ("photo.png", b"#!/bin/sh\nrm -rf /\n", "image/png")}
    response = requests.post(yiwang.url("/api/v1/documents"), files=files, headers=auth(applicant), timeout=10)
    assert_refused(response, 415, 422)


@pytest.mark.parametrize("case_no", ["../../admin", "%2e%2e%2fadmin", "x" * 5000, "{'$gt': ''}"])
def test_odd_case_numbers_are_just_not_found(yiwang: RunningSystem, applicant, case_no):
    response = requests.get(yiwang.url(f"{CASES}/{case_no}"), headers=auth(applicant), timeout=10)
    assert response.status_code in (404, 414, 422), response.status_code


def test_bodies_that_never_arrive_do_not_stop_the_gateway(yiwang: RunningSystem):
    # More stalled registrations than the gateway has workers (10): each declared 100 bytes and sent
    # 6. Before, each held a worker for ever, and every other request waited behind them. (Not
    # logins: failed ones from this address would use up its login allowance for the other tests.)
    host, port = yiwang.base_url.removeprefix("http://").split(":")
    stalled = []
    try:
        for _ in range(12):
            connection = socket.create_connection((host, int(port)), timeout=10)
            connection.sendall(
                b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b'Content-Length: 100\r\n\r\n{"acco'
            )
            stalled.append(connection)
        assert requests.get(yiwang.url("/healthz"), timeout=10).status_code == 200
        found = requests.get(yiwang.url("/api/v1/catalog/items"), params={"q": "高龄津贴"}, timeout=10)
        assert found.status_code == 200 and found.json()["total"] >= 1
    finally:
        for connection in stalled:
            connection.close()


def test_a_chunked_json_body_is_read(yiwang: RunningSystem):
    # A generator body goes chunked, without Content-Length: before, the gateway read it as empty
    # (400, "not valid JSON"); read, it is judged: a citizen's registration missing its fields.
    body = json.dumps({"account_type": "citizen", "name": "张三"}).encode()
    response = requests.post(
        yiwang.url("/api/v1/auth/register"),
        data=(part for part in (body[:10], body[10:])),
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    error = assert_refused(response, 422)
    assert {"id_number", "phone", "password"} <= {d["field"] for d in error["details"]}
