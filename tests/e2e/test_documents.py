"""Document uploads over HTTP: real content types, the size limit, ownership at submission."""

from __future__ import annotations

import hashlib

import requests

from tests.e2e.conftest import auth, sign_up

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
PDF = b"%PDF-1.7\n" + b"x" * 300_000  # more than one chunk
ID_RENEWAL = "62052400GA-QR-0001"


def upload(yiwang, person, content: bytes, filename="photo.png", mimetype="image/png"):
    files = {"file": (filename, content, mimetype)}
    return requests.post(yiwang.url("/api/v1/documents"), files=files, headers=auth(person), timeout=30)


def test_upload_records_hash_size_and_the_real_type(yiwang):
    person = sign_up(yiwang)
    stored = upload(yiwang, person, PDF, "scan.png", "image/png")  # the name and declared type lie
    assert stored.status_code == 201, stored.text
    body = stored.json()
    assert body["content_type"] == "application/pdf"
    assert body["size"] == len(PDF) and body["sha256"] == hashlib.sha256(PDF).hexdigest()


def test_bad_uploads_are_refused(yiwang):
    person = sign_up(yiwang)
    text = upload(yiwang, person, b"just some text", "a.pdf", "application/pdf")
    assert text.status_code == 415 and text.json()["error"]["code"] == "unsupported_media_type"
    huge = upload(yiwang, person, b"%PDF-" + b"0" * (10 * 1024 * 1024))
    assert huge.status_code == 413 and huge.json()["error"]["code"] == "payload_too_large"
    empty = upload(yiwang, person, b"")
    assert empty.status_code == 422
    as_json = requests.post(yiwang.url("/api/v1/documents"), json={"file": "x"}, headers=auth(person), timeout=10)
    assert as_json.status_code == 400 and as_json.json()["error"]["code"] == "malformed_request"
    nothing = requests.post(yiwang.url("/api/v1/documents"), files={"other": ("a", PNG)}, headers=auth(person))
    assert nothing.status_code == 422 and nothing.json()["error"]["details"][0]["field"] == "file"
    assert requests.post(yiwang.url("/api/v1/documents"), files={"file": ("a", PNG)}).status_code == 401


def test_a_case_may_only_use_the_applicants_own_documents(yiwang):
    owner, other = sign_up(yiwang), sign_up(yiwang)
    document_id = upload(yiwang, owner, PNG).json()["document_id"]
    body = {
        "item_code": ID_RENEWAL,
        "form": {"reason": "expired"},
        "materials": [{"code": "photo", "document_id": document_id}],
    }
    stolen = requests.post(yiwang.url("/api/v1/cases"), json=body, headers=auth(other), timeout=10)
    assert stolen.status_code == 422
    assert stolen.json()["error"]["details"] == [
        {"field": "materials.0.document_id", "issue": "no such document of yours"}
    ]
    made_up = {**body, "materials": [{"code": "photo", "document_id": "does-not-exist"}]}
    assert requests.post(yiwang.url("/api/v1/cases"), json=made_up, headers=auth(owner), timeout=10).status_code == 422
    mine = requests.post(yiwang.url("/api/v1/cases"), json=body, headers=auth(owner), timeout=10)
    assert mine.status_code == 201, mine.text
