"""Supervision sums on the real document server (which has its own aggregation quirks)."""

from __future__ import annotations

import eventlet

from services.intake.storage import IntakeStore


def test_fact_sums_are_right_per_kind_department_and_period(mongo_client, db_prefix):
    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    store.ensure_indexes()
    facts = [
        {
            "_id": "e1",
            "kind": "approved",
            "department_code": "D1",
            "day": "2026-11-01",
            "auto": 1,
            "on_time": 1,
            "hours": 2.5,
        },
        {
            "_id": "e2",
            "kind": "approved",
            "department_code": "D1",
            "day": "2026-11-02",
            "auto": 0,
            "on_time": 1,
            "hours": 1.5,
        },
        {"_id": "e3", "kind": "evaluated", "department_code": "D1", "day": "2026-11-02", "score": 2, "bad": 1},
        {
            "_id": "e4",
            "kind": "approved",
            "department_code": "D2",
            "day": "2026-11-02",
            "auto": 1,
            "on_time": 0,
            "hours": 9,
        },
        {
            "_id": "e5",
            "kind": "approved",
            "department_code": "D1",
            "day": "2026-12-01",
            "auto": 1,
            "on_time": 1,
            "hours": 1,
        },
    ]
    pool = eventlet.GreenPool(10)
    added = list(pool.imap(store.add_fact, facts + facts))  # every event delivered twice, concurrently
    assert sorted(added) == [False] * 5 + [True] * 5

    rows = {r["_id"]: r for r in store.fact_sums("D1", "2026-11-01", "2026-11-30")}
    assert rows["approved"] == {
        "_id": "approved",
        "count": 2,
        "auto": 1,
        "on_time": 2,
        "hours": 4.0,
        "score": 0,
        "bad": 0,
    }
    assert rows["evaluated"]["score"] == 2 and rows["evaluated"]["bad"] == 1
    everywhere = {r["_id"]: r for r in store.fact_sums(None, None, None)}
    assert everywhere["approved"]["count"] == 4 and everywhere["approved"]["hours"] == 14.0
