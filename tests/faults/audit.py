"""After a fault: what the applicants were told (201 + case number) against what the store holds.
Every accepted case must exist, be decided, have its one certificate and exactly one notification
per event and recipient; nothing may exist twice."""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pymongo

from tests.faults.load import Load


@dataclass
class Figures:
    fault: str
    requests: int = 0
    accepted: int = 0
    answered_503: int = 0
    answered_5xx_other: int = 0
    transport_errors: int = 0
    lost: int = 0
    duplicated: int = 0
    undecided: int = 0
    recovery_seconds: float | None = None
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        recovery = "-" if self.recovery_seconds is None else f"{self.recovery_seconds:.1f} s"
        return (
            f"{self.fault}: requests {self.requests}, accepted {self.accepted}, 503 {self.answered_503}, "
            f"other 5xx {self.answered_5xx_other}, transport errors {self.transport_errors}, "
            f"lost {self.lost}, duplicated {self.duplicated}, undecided {self.undecided}, recovery {recovery}"
            + "".join(f"; {note}" for note in self.notes)
        )


class Store:
    def __init__(self, uri: str, prefix: str) -> None:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=10_000)
        self.cases = client[f"{prefix}_intake"]["cases"]
        self.certificates = client[f"{prefix}_identity"]["certificates"]
        self.notifications = client[f"{prefix}_notification"]["notifications"]

    def cases_of(self, keys: list[str]) -> list[dict[str, Any]]:
        fields = {"_id": 1, "status": 1, "idempotency_key": 1}
        return list(self.cases.find({"idempotency_key": {"$in": keys}}, fields))

    def certificates_of(self, case_nos: list[str]) -> Counter:
        return Counter(d["case_no"] for d in self.certificates.find({"case_no": {"$in": case_nos}}, {"case_no": 1}))

    def notifications_of(self, case_nos: list[str]) -> Counter:
        found = self.notifications.find({"case_no": {"$in": case_nos}}, {"case_no": 1, "type": 1, "recipient": 1})
        return Counter((d["case_no"], d["type"], d["recipient"]) for d in found)


def notified_types(store: Store, case_no: str) -> set[str]:
    return {kind for (_, kind, _) in store.notifications_of([case_no])}


def audit(fault: str, load: Load, store: Store, expected_notices: set[str], settle: float = 120.0) -> Figures:
    """Wait (up to `settle` s) until every accepted case is decided and notified, then count."""
    accepted = load.accepted()
    statuses = load.statuses()
    figures = Figures(
        fault,
        requests=sum(statuses.values()) + sum(load.errors.values()),
        accepted=len(accepted),
        answered_503=statuses[503],
        answered_5xx_other=sum(n for status, n in statuses.items() if status >= 500 and status != 503),
        transport_errors=sum(load.errors.values()),
    )
    case_nos = [s.case_no for s in accepted if s.case_no]
    deadline = time.monotonic() + settle
    while True:
        # intake scopes each key by its applicant (two people may choose the same key)
        cases = {d["_id"]: d for d in store.cases_of([f"{s.applicant}:{s.key}" for s in load.submissions])}
        decided = [no for no in case_nos if cases.get(no, {}).get("status") == "approved"]
        certificates = store.certificates_of(case_nos)
        notices = store.notifications_of(case_nos)
        complete = {no for no in case_nos if {kind for (n, kind, _) in notices if n == no} >= expected_notices}
        settled = len(decided) == len(certificates) == len(complete) == len(case_nos)
        if settled or time.monotonic() > deadline:
            break
        time.sleep(1)
    figures.lost = sum(1 for no in case_nos if no not in cases)
    figures.undecided = len(case_nos) - len(decided)
    keys = Counter(d["idempotency_key"] for d in cases.values())
    figures.duplicated = (
        sum(n - 1 for n in keys.values() if n > 1)
        + sum(n - 1 for n in certificates.values() if n > 1)
        + sum(n - 1 for n in notices.values() if n > 1)
    )
    missing_certificates = [no for no in case_nos if certificates[no] == 0]
    unnotified = [no for no in case_nos if no not in complete]
    if missing_certificates:
        figures.notes.append(f"no certificate for {len(missing_certificates)} (e.g. {missing_certificates[:3]})")
    if unnotified:
        figures.notes.append(f"not fully notified: {len(unnotified)} (e.g. {unnotified[:3]})")
    refused = Counter(st for s in load.submissions for st in s.statuses if 400 <= st < 500 and st != 429)
    if refused:
        figures.notes.append(f"refused: {dict(refused)}")
    return figures
