"""The applicant's case list and the department's task list, kept beside the cases on the real server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.intake.storage import SYNC_FIELDS, IntakeStore
from tests.support import logging_client


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
        "ever_task": awaiting,
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
    stale_entry = {k: stale[k] for k in ("case_no", "status", "submitted_at", "version")}
    store.my_cases.put("u1", stale["submitted_at"], "C1", stale_entry, version=1)
    assert store.list_for_applicant("u1", None, 0, 20)[0][1]["status"] == "approved"


def test_the_task_board_follows_deadline_moves_and_keeps_its_counts(mongo_client, db_prefix):
    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    store.ensure_indexes()
    docs = [case(f"T{n}", "submitted", 1, True, n) for n in range(1, 6)]  # deadlines 12-09 .. 12-05
    store.cases.insert_many(docs)
    for doc in docs:
        store.sync_views(doc["_id"])
    statuses = ["submitted", "accepted"]
    assert [t["case_no"] for t in store.tasks("D1", statuses, 0, 20)[0]] == ["T5", "T4", "T3", "T2", "T1"]
    assert [t["case_no"] for t in store.tasks("D1", statuses, 1, 2)[0]] == ["T4", "T3"]

    # Accepted with a later deadline: it moves to another day, and the old day forgets it.
    store.cases.update_one({"_id": "T5"}, {"$set": {"status": "accepted", "deadline": "2026-12-20", "version": 2}})
    store.sync_views("T5")
    store.sync_views("T5")  # the event's repair sync changes nothing
    rows, total = store.tasks("D1", statuses, 0, 20)
    assert [t["case_no"] for t in rows] == ["T4", "T3", "T2", "T1", "T5"] and total == 5
    assert store.tasks("D1", ["accepted"], 0, 20) == ([rows[-1]], 1)
    assert store.task_board.buckets.find_one({"_id": "D1/2026-12-05/0"})["tasks"] == {}

    # A late sync of the old state cannot put it back.
    store.task_board.sync("D1", "T5", {**rows[-1], "status": "submitted", "deadline": "2026-12-05", "version": 1}, True)
    assert store.tasks("D1", statuses, 0, 20)[1] == 5
    assert store.task_board.buckets.find_one({"_id": "D1/2026-12-05/0"})["tasks"] == {}

    # Decided: off the board.
    store.cases.update_one({"_id": "T4"}, {"$set": {"status": "approved", "awaiting_review": False, "version": 2}})
    store.sync_views("T4")
    rows, total = store.tasks("D1", statuses, 0, 20)
    assert [t["case_no"] for t in rows] == ["T3", "T2", "T1", "T5"] and total == 4


def test_concurrent_syncs_of_one_case_leave_one_entry(mongo_client, db_prefix):
    import eventlet

    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    store.cases.insert_one(case("M1", "submitted", 1, True, 1))
    store.sync_views("M1")
    # Many writers at once, each with the state it read: the newest must win, everywhere.
    pool = eventlet.GreenPool(20)
    for version in range(2, 22):
        deadline = f"2026-12-{version:02d}"
        entry = {**case("M1", "accepted", version, True, 1), "deadline": deadline}
        pool.spawn(
            store.task_board.sync,
            "D1",
            "M1",
            {k: entry[k] for k in ("case_no", "status", "submitted_at", "deadline", "version")},
            True,
        )
    pool.waitall()
    rows, total = store.tasks("D1", ["submitted", "accepted"], 0, 20)
    assert total == 1 and [(r["version"], r["deadline"]) for r in rows] == [(21, "2026-12-21")]
    holding = [b["_id"] for b in store.task_board.buckets.find({}) if b["tasks"]]
    assert holding == ["D1/2026-12-21/0"]


def test_a_stale_sync_overtaken_between_its_steps_takes_its_entry_back_out(mongo_client, db_prefix):
    from services.intake.task_board import TaskBoard

    fields = ("case_no", "status", "submitted_at", "deadline", "version")
    old = {k: case("S1", "submitted", 1, True, 1)[k] for k in fields}  # deadline 2026-12-09
    new = {**old, "status": "accepted", "deadline": "2026-12-20", "version": 2}

    class Overtaken(TaskBoard):
        """The newer sync runs whole while the older one is between its pointer and its put."""

        def _put(self, department, day, case_no, entry):
            if entry["version"] == 1:
                TaskBoard.sync(self, department, case_no, new, True)
            super()._put(department, day, case_no, entry)

    board = Overtaken(mongo_client[f"{db_prefix}_intake"])
    board.sync("D1", "S1", old, True)
    assert board.page("D1", ["submitted", "accepted"], 0, 20) == ([new], 1)
    assert [b["_id"] for b in board.buckets.find({}) if b["tasks"]] == ["D1/2026-12-20/0"]


def test_an_applicants_single_document_of_cases_is_split_by_month_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_intake"]
    september = {**case("OLD-1", "approved", 2, False, 0), "submitted_at": datetime(2026, 9, 3, tzinfo=UTC)}
    november = case("OLD-2", "submitted", 1, True, 5)
    entries = {
        c["case_no"]: {k: v for k, v in c.items() if k not in ("_id", "idempotency_key")} for c in (september, november)
    }
    db.applicant_cases.insert_one({"_id": "u1", "cases": entries})
    store = IntakeStore(db)
    store.ensure_indexes()

    rows, total = store.list_for_applicant("u1", None, 0, 20)
    assert [r["case_no"] for r in rows] == ["OLD-2", "OLD-1"] and total == 2
    assert store.list_for_applicant("u1", "approved", 0, 20)[1] == 1
    assert db.applicant_cases.count_documents({}) == 0
    assert sorted(d["_id"] for d in db.applicant_case_months.find({})) == ["u1/2026-09", "u1/2026-11"]


def test_an_applied_event_returns_the_case_as_written_and_the_views_follow_it(store):
    store.cases.insert_one(case("C1", "submitted", 1, False, 1))
    decided = {"status": "approved", "decision": {"outcome": "approved"}}
    written = store.apply_event("C1", "e-1", ["submitted"], decided, {"status": "approved"})
    assert written is not None
    assert set(SYNC_FIELDS) <= set(written)
    assert (written["status"], written["version"], written["decision"]) == ("approved", 2, {"outcome": "approved"})
    assert store.apply_event("C1", "e-1", ["submitted", "approved"], decided) is None  # the same event again
    assert store.apply_event("C1", "e-2", ["submitted"], decided) is None  # no longer from that status

    # Synced from what the write returned, with no read of the case: remove it to prove it.
    store.cases.delete_one({"_id": "C1"})
    assert store.sync_views("C1", written) is written
    rows, total = store.list_for_applicant("u1", None, 0, 20)
    assert total == 1 and (rows[0]["status"], rows[0]["version"]) == ("approved", 2)


def on_board(store: IntakeStore, case_no: str) -> bool:
    return case_no in [t["case_no"] for t in store.tasks("D1", ["submitted", "accepted"], 0, 50)[0]]


def test_a_case_the_rules_decide_never_looks_at_the_task_board(db_prefix):
    client, log = logging_client()
    store = IntakeStore(client[f"{db_prefix}_intake"])
    store.cases.insert_one(case("C1", "submitted", 1, False, 1))
    store.sync_views("C1")
    written = store.apply_event("C1", "e-1", ["submitted"], {"status": "approved"})
    store.sync_views("C1", written)
    assert "task_pointers" not in log.targets and "department_tasks" not in log.targets
    assert store.list_for_applicant("u1", None, 0, 20)[0][0]["status"] == "approved"
    client.close()


def test_a_case_that_waited_for_a_person_is_marked_and_leaves_the_board_when_decided(store):
    store.cases.insert_one(case("C1", "submitted", 1, False, 1))
    store.sync_views("C1")
    handed_over = store.apply_event("C1", "e-1", ["submitted"], {"awaiting_review": True})
    assert handed_over["ever_task"] is True
    store.sync_views("C1", handed_over)
    assert on_board(store, "C1")
    # A decision clears awaiting_review but not the mark, so the sync takes the case off the board.
    decided = store.apply_event("C1", "e-2", ["submitted"], {"status": "approved", "awaiting_review": False})
    assert decided["ever_task"] is True
    store.sync_views("C1", decided)
    assert not on_board(store, "C1")


def test_a_case_from_before_the_mark_still_leaves_the_board(store):
    older = case("C1", "submitted", 1, True, 1)
    del older["ever_task"]
    store.cases.insert_one(older)
    store.sync_views("C1")
    assert on_board(store, "C1")
    store.cases.update_one({"_id": "C1"}, {"$set": {"status": "approved", "awaiting_review": False, "version": 2}})
    store.sync_views("C1")
    assert not on_board(store, "C1")


def test_a_sync_that_died_before_its_recount_is_finished_by_the_next(mongo_client, db_prefix):
    # Put, then the process died (or the store timed out) before the count moved: the next sync of
    # the same version puts nothing, and must count it all the same.
    import pytest

    from services.intake.task_board import TaskBoard

    entry = {k: case("R1", "submitted", 1, True, 1)[k] for k in ("case_no", "status", "submitted_at", "deadline")}
    entry["version"] = 1

    class DiesBeforeCounting(TaskBoard):
        def _recount(self, department, slot):
            raise ConnectionError("the process died here")

    with pytest.raises(ConnectionError):
        DiesBeforeCounting(mongo_client[f"{db_prefix}_intake"]).sync("D1", "R1", entry, True)
    board = TaskBoard(mongo_client[f"{db_prefix}_intake"])
    assert board.page("D1", ["submitted"], 0, 20) == ([], 0)  # filed, not counted: on no page
    board.sync("D1", "R1", entry, True)  # the relay's repair sync
    assert board.page("D1", ["submitted"], 0, 20) == ([entry], 1)


def test_empty_slots_of_past_deadlines_leave_the_summary(mongo_client, db_prefix):
    # Each deadline day that ever had a task kept its slot, empty, for ever: a thousand a year in a
    # document every task change rewrites and every page reads.
    store = IntakeStore(mongo_client[f"{db_prefix}_intake"])
    fields = ("case_no", "status", "submitted_at", "deadline", "version")
    for n, deadline in enumerate(["2026-11-02", "2026-11-03", "2026-12-20"], start=1):
        entry = {**{k: case(f"P{n}", "submitted", 1, True, 1)[k] for k in fields}, "deadline": deadline}
        store.task_board.sync("D1", f"P{n}", entry, True)
    overdue = {**{k: case("P4", "accepted", 1, True, 1)[k] for k in fields}, "deadline": "2026-11-02"}
    store.task_board.sync("D1", "P4", overdue, True)
    for n in (1, 2, 3):  # decided: out of their slots, which stay, empty
        store.task_board.sync("D1", f"P{n}", {"version": 2, "case_no": f"P{n}"}, False)
    slots = lambda: sorted(store.task_board.days.find_one({"_id": "D1"})["days"])  # noqa: E731
    assert slots() == ["2026-11-02/0", "2026-11-03/0", "2026-12-20/0"]

    assert store.prune_task_board("2026-11-22") == 1
    assert slots() == ["2026-11-02/0", "2026-12-20/0"]  # an overdue task's slot stays; a future empty one too
    assert store.task_board.buckets.find_one({"_id": "D1/2026-11-03/0"})["tasks"] == {}  # kept: its revision
    # A late recount of the pruned slot (read before the prune) puts it back empty: harmless, and
    # a case filed there later still counts, the bucket's revision being above it.
    kept = store.task_board.buckets.find_one({"_id": "D1/2026-11-03/0"})["rev"]
    store.task_board.days.update_one({"_id": "D1"}, {"$set": {"days.2026-11-03/0": {"rev": kept, "counts": {}}}})
    assert store.tasks("D1", ["accepted"], 0, 20)[1] == 1
    # A case filed under a pruned day again is counted as any other.
    late = {**{k: case("P5", "submitted", 1, True, 1)[k] for k in fields}, "deadline": "2026-11-03"}
    store.task_board.sync("D1", "P5", late, True)
    assert store.tasks("D1", ["submitted"], 0, 20) == ([late], 1)
