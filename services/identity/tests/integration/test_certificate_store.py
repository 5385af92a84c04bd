"""A user's certificates on the real server: found through the user's index (by _id), newest first;
a redelivered issue repairs a missing index entry; certificates stored before the index are indexed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.envelope import new_event
from contracts.events import CertificateIssued
from services.identity.storage import IdentityStore

T0 = datetime(2026, 11, 26, tzinfo=UTC)


def certificate(cid: str, user_id: str, hours: int) -> dict:
    return {
        "_id": cid,
        "certificate_id": cid,
        "type": "t",
        "user_id": user_id,
        "issued_at": T0 + timedelta(hours=hours),
    }


def issued(doc: dict):
    payload = CertificateIssued(
        certificate_id=doc["_id"],
        certificate_type="t",
        certificate_name="证",
        item_name="事项",
        case_no=f"case-{doc['_id']}",
        user_id=doc["user_id"],
    )
    return new_event(payload, producer="identity")


def test_a_users_certificates_newest_first_and_no_one_elses(store):
    for doc in (
        certificate("A", "u1", 1),
        certificate("B", "u1", 3),
        certificate("C", "u2", 2),
        certificate("D", "u1", 2),
    ):
        assert store.insert_certificate(doc, issued(doc))
    assert [c["_id"] for c in store.certificates_of("u1")] == ["B", "D", "A"]
    assert [c["_id"] for c in store.certificates_of("nobody")] == []
    assert set(store.certificates_by_id(["C", "A", "missing", "A"])) == {"A", "C"}


def test_a_redelivered_issue_repairs_the_index_of_a_process_that_died_in_between(store):
    doc = certificate("A", "u1", 1)
    store.certificates.insert_one(doc)  # the certificate written, the index entry never
    assert store.certificates_of("u1") == []
    assert not store.insert_certificate(doc, issued(doc))
    assert [c["_id"] for c in store.certificates_of("u1")] == ["A"]


def test_certificates_stored_before_the_index_are_indexed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_identity"]
    db.certificates.insert_many([certificate("OLD-1", "u1", 1), certificate("OLD-2", "u1", 2)])
    IdentityStore(db).ensure_indexes()
    assert [c["_id"] for c in IdentityStore(db).certificates_of("u1")] == ["OLD-2", "OLD-1"]
