"""Electronic certificates (电子证照) issued when a case of a certificate-issuing item is approved."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from contracts.events import CaseApproved
from contracts.identity import Certificate, CertificateCheck


def certificate_id(certificate_type: str, case_no: str) -> str:
    """Deterministic per case, so a redelivered approval cannot issue a second certificate."""
    return f"{certificate_type}:{case_no}"


def new_certificate(approved: CaseApproved, now: datetime) -> dict[str, Any] | None:
    spec = approved.issues_certificate
    if spec is None:
        return None
    cid = certificate_id(spec.type, approved.case_no)
    return {
        "_id": cid,
        "certificate_id": cid,
        "type": spec.type,
        "name": spec.name,
        "user_id": approved.applicant_id,
        "issued_at": now,
        "valid_until": now + timedelta(days=spec.valid_days) if spec.valid_days else None,
        "case_no": approved.case_no,
        # The form first, so an applicant's field can never overwrite what the item says.
        "data": {**approved.form, "item_code": approved.item_code, "item_name": approved.item_name},
    }


def is_valid(doc: dict[str, Any], now: datetime) -> bool:
    return doc.get("revoked_at") is None and (doc.get("valid_until") is None or doc["valid_until"] > now)


def view(doc: dict[str, Any]) -> Certificate:
    return Certificate.model_validate({k: doc.get(k) for k in Certificate.model_fields})


def check(
    certificate_ids: list[str], docs: dict[str, dict[str, Any]], user_id: str, now: datetime
) -> list[CertificateCheck]:
    results = []
    for cid in certificate_ids:
        doc = docs.get(cid)
        owned = doc is not None and doc["user_id"] == user_id
        results.append(
            CertificateCheck(
                certificate_id=cid,
                owned=owned,
                valid=owned and is_valid(doc, now),
                type=doc["type"] if owned else None,  # say nothing about someone else's certificate
            )
        )
    return results
