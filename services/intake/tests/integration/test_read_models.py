"""The applicant's case list and the department's task list, kept beside the cases on the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.intake.storage import IntakeStore


def case(no: str, status: str, version: int, awaiting: bool, minutes: int) -> dict:
    return {
        "_id": no,
        "case_no": no,
        "item_code": "I",
        "item_name": "事项",
        "department_code": "D1",
        "applicant": {"user_id": "u1", "name": "张三"},
        "status": status,
        "version": version,
        "awaiting_review": awaiting,
        "submitted_at": datetime(2026, 11, 26, tzinfo=UTC) + timedelta(minutes=minutes),
        "deadline": f"2026-12-{10 - minutes:02d}",
        "deadline_provisional": False,
        "idempotency_key": f"none:{no}",
    }


def test_views_follow_the_cases_and_never_go_back_in_time(mongo_client, db_prefix):
    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    store.ensure_indexes()
    store.cases.insert_many([case("C1", "submitted", 1, True, 1), case("C2", "accepted", 3, True, 2)])
    for no in ("C1", "C2"):
        store.sync_views(no)

    rows, total = store.list_for_applicant("u1", None, 0, 20)
    assert total == 2 and [r["case_no"] for r in rows] == ["C2", "C1"]  # newest first
    tasks, _ = store.tasks("D1", ["submitted", "accepted"], 0, 20)
    assert [t["case_no"] for t in tasks] == ["C2", "C1"]  # earliest deadline first

    # C1 is decided: it leaves the task list and shows its new status.
    store.cases.update_one({"_id": "C1"}, {"$set": {"status": "approved", "awaiting_review": False, "version": 2}})
    store.sync_views("C1")
    assert [t["case_no"] for t in store.tasks("D1", ["submitted", "accepted"], 0, 20)[0]] == ["C2"]
    assert store.list_for_applicant("u1", "approved", 0, 20)[0][0]["status"] == "approved"

    # A late write of an older state cannot overwrite the newer one.
    stale = {**case("C1", "submitted", 1, True, 1)}
    store.my_cases.update_one(
        {"_id": "u1", "$or": [{"cases.C1": {"$exists": False}}, {"cases.C1.version": {"$lt": 1}}]},
        {"$set": {"cases.C1": {k: stale[k] for k in ("case_no", "status", "version")}}},
    )
    assert store.list_for_applicant("u1", None, 0, 20)[0][1]["status"] == "approved"
