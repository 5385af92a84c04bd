"""Idempotency keys on the real server: found by _id, one case number per key, and the keys of
cases stored before claims existed are indexed once."""

from __future__ import annotations

from datetime import UTC, datetime

from services.intake.storage import IntakeStore


def stored_case(case_no: str, key: str, request_hash: str = "h1") -> dict:
    return {"_id": case_no, "case_no": case_no, "idempotency_key": key, "request_hash": request_hash}


def test_the_first_claim_wins_and_later_claims_get_its_number(store):
    assert store.claim_key("u1:k", "C-1", "h1") == {"_id": "u1:k", "case_no": "C-1", "request_hash": "h1"}
    assert store.claim_key("u1:k", "C-2", "h2")["case_no"] == "C-1"
    assert store.claim_key("u2:k", "C-3", "h1")["case_no"] == "C-3"  # keys are per applicant


def test_a_key_finds_its_case_only_once_the_case_is_stored(store):
    store.claim_key("u1:k", "C-1", "h1")
    assert store.by_idempotency_key("u1:k") is None  # claimed by a request in flight (or dead)
    assert store.insert_case(stored_case("C-1", "u1:k"), [])
    assert store.by_idempotency_key("u1:k")["case_no"] == "C-1"
    assert store.by_idempotency_key("u1:other") is None


def test_two_inserts_for_one_claimed_number_store_one_case(store):
    claim = store.claim_key("u1:k", "C-1", "h1")
    assert store.insert_case(stored_case(claim["case_no"], "u1:k"), [])
    assert not store.insert_case(stored_case(claim["case_no"], "u1:k"), [])
    assert store.cases.count_documents({}) == 1


def test_keys_of_cases_stored_before_claims_are_indexed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_intake"]
    db.cases.insert_many([stored_case("OLD-1", "u1:k", "h-old"), stored_case("OLD-2", "none:OLD-2")])
    store = IntakeStore(db)
    store.ensure_indexes()
    assert store.by_idempotency_key("u1:k")["case_no"] == "OLD-1"
    assert store.case_keys.count_documents({}) == 1  # keyless cases need no claim
    assert store.claim_key("u1:k", "NEW-1", "h-old")["case_no"] == "OLD-1"

    # Done once: a case inserted behind the store's back later is not indexed by a restart.
    db.cases.insert_one(stored_case("OLD-3", "u1:k3"))
    IntakeStore(db).ensure_indexes()
    assert db.migrations.find_one({"_id": "case_keys"})["at"] <= datetime.now(UTC)
    assert IntakeStore(db).by_idempotency_key("u1:k3") is None
