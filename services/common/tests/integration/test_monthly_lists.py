"""Per-owner lists by month on the real server: pages newest first across months, newer versions
only, repeats change nothing, and counts repaired after a writer that died before counting."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.common.monthly_lists import MonthlyLists, month_of


@pytest.fixture
def lists(mongo_client, db_prefix) -> MonthlyLists:
    db = mongo_client[f"{db_prefix}_lists"]
    return MonthlyLists(db["months"], db["counts"], lambda row: (row[1]["at"], row[0]))


def entry(at: datetime, version: int = 1, status: str = "submitted") -> dict:
    return {"at": at, "version": version, "status": status}


def keys(rows) -> list[str]:
    return [key for key, _ in rows]


START = datetime(2026, 9, 30, 15, 0, tzinfo=UTC)  # 23:00 in China: still September there


def test_months_are_china_months():
    assert month_of(START) == "2026-09"
    assert month_of(START + timedelta(hours=1)) == "2026-10"  # 00:00 on 1 October in China
    assert month_of(datetime(2026, 10, 31, 17, 0)) == "2026-11"  # naive: read as UTC


def test_pages_run_newest_first_across_months(lists):
    moments = [START + timedelta(days=10 * n, minutes=n) for n in range(7)]  # September to November
    for n, at in enumerate(moments):
        lists.put("u1", at, f"C{n}", entry(at), version=1)
    lists.put("u2", START, "OTHER", entry(START), version=1)

    everything, total = lists.page("u1", 0, 20)
    assert keys(everything) == [f"C{n}" for n in reversed(range(7))] and total == 7
    pages = [keys(lists.page("u1", skip, 3)[0]) for skip in (0, 3, 6)]
    assert pages == [["C6", "C5", "C4"], ["C3", "C2", "C1"], ["C0"]]
    assert lists.counts.find_one({"_id": "u1"})["months"] == {"2026-09": 1, "2026-10": 3, "2026-11": 3}
    assert lists.page("nobody", 0, 20) == ([], 0)


def test_only_a_newer_version_replaces_an_entry_and_repeats_change_nothing(lists):
    lists.put("u1", START, "C1", entry(START, 1, "submitted"), version=1)
    lists.put("u1", START, "C1", entry(START, 3, "approved"), version=3)
    lists.put("u1", START, "C1", entry(START, 2, "accepted"), version=2)  # late: ignored
    lists.put("u1", START, "C1", entry(START, 1, "submitted"), version=1)  # a repeat of the first
    rows, total = lists.page("u1", 0, 20)
    assert total == 1 and rows[0][1]["status"] == "approved"

    approved, count = lists.page("u1", 0, 20, keep=lambda e: e["status"] == "approved")
    assert keys(approved) == ["C1"] and count == 1
    assert lists.page("u1", 0, 20, keep=lambda e: e["status"] == "submitted") == ([], 0)


def test_entries_without_versions_are_added_once_and_their_fields_set(lists):
    lists.put("u1", START, "N1", {"at": START, "read": False})
    lists.put("u1", START, "N1", {"at": START, "read": False})
    lists.set_fields("u1", START, "N1", {"read": True})
    lists.set_fields("u1", START, "MISSING", {"read": True})  # not there: nothing is created
    rows, total = lists.page("u1", 0, 20)
    assert rows == [("N1", {"at": START, "read": True})] and total == 1


def test_a_count_lost_with_its_writer_is_repaired(lists):
    lists.put("u1", START, "C1", entry(START), version=1)
    # A writer that died after adding C2 and C3 but before counting them (C3 in a new month).
    later = START + timedelta(days=1)
    lists.months.update_one({"_id": "u1/2026-09"}, {"$set": {"items.C2": entry(START + timedelta(minutes=1))}})
    lists.months.update_one({"_id": "u1/2026-10"}, {"$set": {"items.C3": entry(later)}}, upsert=True)
    assert lists.page("u1", 0, 20)[1] == 1

    lists.put("u1", later, "C3", entry(later), version=1)  # the redelivered write: its month is counted
    lists.page("u1", 0, 20)  # the read finds September larger than counted and repairs it
    rows, total = lists.page("u1", 0, 20)
    assert keys(rows) == ["C3", "C2", "C1"] and total == 3


def test_a_count_raised_past_the_size_is_lowered_by_the_next_read(lists):
    lists.put("u1", START, "C1", entry(START), version=1)
    # A repair that ran while a writer was between its entry and its count, then the count landed.
    lists.counts.update_one({"_id": "u1"}, {"$set": {"months.2026-09": 2}})
    assert lists.page("u1", 0, 20)[1] == 2
    rows, total = lists.page("u1", 0, 20)
    assert keys(rows) == ["C1"] and total == 1


class CreatedMeanwhile:
    """The months collection, with another writer creating the month's document (with its own entry)
    right after our first conditional update missed."""

    def __init__(self, months, doc_id: str, other: dict) -> None:
        self.months, self.doc_id, self.other, self.missed = months, doc_id, other, False

    def update_one(self, query, change, upsert=False):
        result = self.months.update_one(query, change, upsert=upsert)
        if not self.missed and not result.matched_count:
            self.missed = True
            self.months.insert_one({"_id": self.doc_id, "items": self.other})
        return result

    def __getattr__(self, name):
        return getattr(self.months, name)


def test_an_entry_is_added_when_another_writer_creates_the_month_meanwhile(lists):
    lists.months = CreatedMeanwhile(lists.months, "u1/2026-09", {"B": entry(START)})
    lists.put("u1", START + timedelta(minutes=1), "A", entry(START + timedelta(minutes=1)))
    assert sorted(lists.months.find_one({"_id": "u1/2026-09"})["items"]) == ["A", "B"]
