"""The deadline index on the real server: a case is in it while it runs and leaves it with the sync
that finds it stopped (decided, withdrawn, waiting for a supplement), not weeks later when the
check reaches its day."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.intake.storage import IntakeStore

DAY = "2099-03-02"


def running_case(case_no: str, status: str = "submitted") -> dict:
    return {
        "_id": case_no,
        "case_no": case_no,
        "item_code": "ITEM-1",
        "item_name": "测试事项",
        "department_code": "620524GA",
        "applicant": {"user_id": "u-1", "name": "张三"},
        "status": status,
        "submitted_at": datetime(2099, 2, 1, 8, tzinfo=UTC),
        "deadline": DAY,
        "deadline_provisional": False,
        "awaiting_review": False,
        "version": 1,
        "idempotency_key": f"none:{case_no}",
    }


def move(store, case_no: str, status: str) -> None:
    store.cases.update_one({"_id": case_no}, {"$set": {"status": status}, "$inc": {"version": 1}})
    store.sync_views(case_no)


@pytest.mark.parametrize("stopped", ["approved", "rejected", "withdrawn", "supplement_requested"])
def test_a_case_leaves_the_index_with_the_sync_that_finds_it_stopped(store, stopped):
    store.insert_case(running_case("C-1"), [])
    store.insert_case(running_case("C-2"), [])
    store.sync_views("C-1")
    store.sync_views("C-2")
    assert sorted(store.watched(DAY)) == ["C-1", "C-2"]

    move(store, "C-1", stopped)
    assert store.watched(DAY) == ["C-2"]  # the other case of the day is still watched
    assert DAY in store.watched_days()  # the day itself is dropped by the check, as before


def test_a_resubmitted_case_is_watched_again(store):
    store.insert_case(running_case("C-1"), [])
    store.sync_views("C-1")
    move(store, "C-1", "supplement_requested")  # the clock stops
    assert store.watched(DAY) == []
    move(store, "C-1", "resubmitted")
    assert store.watched(DAY) == ["C-1"]


def test_syncing_a_stopped_case_again_changes_nothing(store):
    store.insert_case(running_case("C-1", status="approved"), [])
    store.sync_views("C-1")  # never watched: taking it out is a no-op
    store.sync_views("C-1")
    assert store.watched(DAY) == []
    assert store.watched_days() == {}


def test_buckets_of_the_16_bucket_layout_are_moved_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_intake"]
    db.deadline_index.insert_many(
        [
            {"_id": f"{DAY}/03", "cases": {"OLD-1": True, "OLD-2": True}},
            {"_id": "2099-03-03/15", "cases": {"OLD-3": True}},
            {"_id": "days", "days": {DAY: 2, "2099-03-03": 1}},
        ]
    )
    store = IntakeStore(db)
    store.ensure_indexes()
    assert sorted(store.watched(DAY)) == ["OLD-1", "OLD-2"]
    assert store.watched("2099-03-03") == ["OLD-3"]
    assert store.watched_days() == {DAY: 2, "2099-03-03": 1}  # the day counts are the layout's own
    assert db.deadline_index.count_documents({"_id": {"$in": [f"{DAY}/03", "2099-03-03/15"]}}) == 0

    store.unwatch(DAY, "OLD-1", 1)  # found where the current layout files it
    assert store.watched(DAY) == ["OLD-2"]
    db.deadline_index.insert_one({"_id": f"{DAY}/04", "cases": {"LATE": True}})
    IntakeStore(db).ensure_indexes()  # recorded as done: not run again
    assert store.watched(DAY) == ["OLD-2"]


def test_a_reader_of_an_older_version_cannot_take_out_a_newer_watch(store):
    store.insert_case(running_case("C-1"), [])
    store.sync_views("C-1")  # watched at version 1
    # A sync that read the case paused (version 2) is overtaken by the resubmission (version 3,
    # the same deadline), which watches it again; the paused reader's removal comes last.
    store.cases.update_one({"_id": "C-1"}, {"$set": {"status": "resubmitted"}, "$inc": {"version": 2}})
    store.sync_views("C-1")
    store.unwatch(DAY, "C-1", 2)
    assert store.watched(DAY) == ["C-1"]
    store.unwatch(DAY, "C-1", 3)  # a reader of the current version may
    assert store.watched(DAY) == []
    store.sync_views("C-1")
    store.unwatch(DAY, "C-1", None)  # the case is gone: whatever its version
    assert store.watched(DAY) == []


def test_a_recomputed_deadline_whose_sync_died_is_found_by_the_next_load(store):
    # A loaded calendar moves a provisional deadline (one write), then syncs the read models (the
    # deadline index among them). A process that died in between left the case watched under its
    # old day only; the mark keeps it among the cases the next load recomputes.
    store.insert_case({**running_case("C-1"), "deadline_provisional": True}, [])
    store.sync_views("C-1")
    moved = "2099-03-09"
    assert not store.set_deadline("C-1", 0, {"deadline": moved})  # not over the version read: nothing
    assert store.set_deadline("C-1", 1, {"deadline": moved, "deadline_warned": False, "deadline_provisional": False})
    assert [c["_id"] for c in store.provisional_cases("", 10)] == ["C-1"]  # not provisional, not synced
    store.sync_views("C-1")
    store.deadline_synced("C-1")
    assert store.provisional_cases("", 10) == []
    assert store.watched(moved) == ["C-1"]


def test_the_guesses_a_recomputation_forgets_are_kept_until_it_synced(store):
    store.insert_case({**running_case("C-1"), "deadline_provisional": True}, [])
    assert store.set_deadline("C-1", 1, {"deadline": "2099-03-09", "overdue": False}, forgets=DAY)
    assert store.set_deadline("C-1", 2, {"deadline": "2099-03-10"}, forgets="2099-03-09")
    assert store.set_deadline("C-1", 3, {"deadline": "2099-03-10"})
    [read] = store.provisional_cases("", 10)
    assert sorted(read["overdue_guesses"]) == [DAY, "2099-03-09"]
    store.deadline_synced("C-1")
    assert "overdue_guesses" not in store.cases.find_one({"_id": "C-1"})


def test_a_flag_is_not_raised_for_a_deadline_that_moved_after_the_check_read_it(store):
    from contracts.envelope import new_event
    from contracts.events import CaseOverdue

    store.insert_case(running_case("C-1"), [])
    overdue = new_event(
        CaseOverdue(
            case_no="C-1",
            item_code="ITEM-1",
            item_name="测试事项",
            department_code="620524GA",
            applicant_id="u-1",
            deadline=DAY,
        ),
        producer="intake",
    )
    # The check read DAY; an acceptance then moved the deadline on and cleared the flags.
    store.cases.update_one({"_id": "C-1"}, {"$set": {"deadline": "2099-03-20", "overdue": False}})
    assert not store.flag_once("C-1", "overdue", DAY, ["submitted"], overdue)
    assert store.cases.find_one({"_id": "C-1"})["overdue"] is False
    version = store.cases.find_one({"_id": "C-1"})["version"]
    assert store.flag_once("C-1", "overdue", "2099-03-20", ["submitted"], overdue)
    # A new version: a calendar load that read the case before cannot clear the flag unseen.
    assert store.cases.find_one({"_id": "C-1"})["version"] == version + 1
    assert not store.set_deadline("C-1", version, {"deadline": "2099-03-27", "overdue": False})


def test_a_case_no_longer_overdue_leaves_the_supervision_count(store):
    guessed = {"kind": "overdue", "department_code": "620524GA", "day": "2099-03-03", "deadline": DAY}
    store.add_fact({"_id": "overdue:C-1", **guessed})
    store.forget_overdue("C-1", DAY)
    assert store.facts.count_documents({}) == 0
    # Counted before facts said their deadline: forgotten as before.
    store.add_fact({"_id": "overdue:C-2", "kind": "overdue", "department_code": "620524GA", "day": "2099-03-03"})
    store.forget_overdue("C-2", DAY)
    assert store.facts.count_documents({}) == 0


def test_lateness_against_a_real_deadline_stays_counted_when_a_later_guess_moves(store):
    # Late against a deadline of a known year, accepted with a new deadline in a year not loaded
    # yet (a guess): loading that year moves the guess, and the real lateness stays.
    store.add_fact(
        {"_id": "overdue:C-1", "kind": "overdue", "department_code": "620524GA", "day": "2099-03-03", "deadline": DAY}
    )
    store.forget_overdue("C-1", "2100-01-07")
    assert store.facts.count_documents({}) == 1


def test_a_day_whose_count_was_lost_is_listed_by_the_next_sync(store):
    # The writer added the case to its day's bucket and died before counting the day: the
    # repeated sync (redelivery, outbox relay) finds the entry in and must still list the day.
    store.insert_case(running_case("C-1"), [])
    store.sync_views("C-1")
    store.deadlines.update_one({"_id": "days"}, {"$unset": {f"days.{DAY}": ""}})
    assert DAY not in store.watched_days()
    store.sync_views("C-1")
    assert store.watched_days() == {DAY: 1}
    store.sync_views("C-1")  # listed: its count stays (a checker's drop compares it)
    assert store.watched_days() == {DAY: 1}
