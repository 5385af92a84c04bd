"""Intake's store: cases (with their pending events) and per-department daily counters."""

from __future__ import annotations

import zlib
from datetime import UTC, datetime
from typing import Any

from bson import Binary
from pymongo import ASCENDING, DESCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from contracts.envelope import Envelope
from services.common.mongo import run_once
from services.common.monthly_lists import MonthlyLists
from services.common.outbox import OutboxCollection
from services.intake.lifecycle import TASK_STATUSES, Change
from services.intake.supervision import overdue_fact_id
from services.intake.task_board import TaskBoard

# What the applicant's list and the reviewer's task list show of a case.
VIEW_FIELDS = (
    "case_no",
    "item_code",
    "item_name",
    "status",
    "applicant",
    "submitted_at",
    "deadline",
    "deadline_provisional",
    "awaiting_review",
    "version",
)
# What `sync_views` reads of a case: the read models' entries, where they go, and the decision.
SYNC_FIELDS = (*VIEW_FIELDS, "department_code", "decision", "ever_task")

# Deadline index buckets per day, each found by _id (see watch_deadline). Many, so that a bucket
# stays small at a province's volume: FerretDB rewrites the whole document for every entry set
# (`make bench`: 3 ms with 100 entries, 18 ms with 1,000, over 500 ms with 10,000).
DEADLINE_SHARDS = 128


_PROVISIONAL = {"$or": [{"deadline_provisional": True}, {"deadline_recomputing": True}]}
_RECOMPUTE_FIELDS = {
    "deadline_start": 1,
    "deadline_days": 1,
    "pauses": 1,
    "deadline": 1,
    "version": 1,
    "overdue_guesses": 1,
}


class IntakeStore:
    def __init__(self, db: Database) -> None:
        self.cases = db["cases"]
        self.counters = db["counters"]
        self.documents = db["documents"]
        self.calendars = db["calendars"]
        # Read models keyed by _id, the one lookup every server answers from an index.
        # Each applicant's cases, newest first, one document per month (see MonthlyLists).
        self.my_cases = MonthlyLists(
            db["applicant_case_months"], db["applicant_case_counts"], lambda row: (row[1]["submitted_at"], row[0])
        )
        self._older_my_cases = db["applicant_cases"]  # one document per applicant, before months
        self.task_board = TaskBoard(db)
        self.facts = db["supervision_facts"]
        self.document_chunks = db["document_chunks"]
        self.deadlines = db["deadline_index"]
        # Idempotency key -> the case number it stands for: found by _id (a filter on the cases'
        # key field is a full scan on FerretDB, which every submission would pay).
        self.case_keys = db["case_keys"]
        self.outbox = OutboxCollection(self.cases)

    def ensure_indexes(self) -> None:
        self.cases.create_index([("applicant.user_id", ASCENDING), ("submitted_at", DESCENDING)])
        self.cases.create_index([("department_code", ASCENDING), ("status", ASCENDING)])
        self.cases.create_index(
            [("department_code", ASCENDING), ("awaiting_review", ASCENDING), ("deadline", ASCENDING)]
        )
        # Every case has a key ("none:<case_no>" without a header): the server has no partial indexes.
        self.cases.create_index([("idempotency_key", ASCENDING)], unique=True)
        self.outbox.ensure_indexes()
        self.document_chunks.create_index([("document_id", ASCENDING), ("n", ASCENDING)])  # for MongoDB's tools
        self.facts.create_index([("department_code", ASCENDING), ("day", ASCENDING)])
        self.cases.create_index([("deadline_provisional", ASCENDING)])
        self.cases.create_index([("deadline_recomputing", ASCENDING)])
        self.cases.create_index([("status", ASCENDING), ("deadline", ASCENDING)])
        run_once(self.cases.database, "case_keys", self._claim_keys_of_older_cases)
        run_once(self.cases.database, "deadline_index_128", self._reshard_deadline_index)
        run_once(self.cases.database, "applicant_cases_by_month", self._split_my_cases_by_month)

    def _split_my_cases_by_month(self) -> None:
        """Move each applicant's single document of cases into documents by month."""
        for older in self._older_my_cases.find({}):
            for case_no, entry in (older.get("cases") or {}).items():
                self.my_cases.put(older["_id"], entry["submitted_at"], case_no, entry, entry.get("version") or 1)
            self._older_my_cases.delete_one({"_id": older["_id"]})

    def _reshard_deadline_index(self) -> None:
        """Move the entries of the 16-bucket layout (`<day>/<nn>`) into today's buckets."""
        for bucket in self.deadlines.find({"_id": {"$ne": "days"}}):
            day, shard = bucket["_id"].split("/", 1)
            if len(shard) != 2:
                continue  # a bucket of the current layout
            for case_no in bucket.get("cases") or {}:
                # Watched at version 0: any reader of the case may take it out.
                self.deadlines.update_one(
                    {"_id": deadline_bucket(day, case_no)}, {"$max": {f"cases.{case_no}": 0}}, upsert=True
                )
            self.deadlines.delete_one({"_id": bucket["_id"]})

    def _claim_keys_of_older_cases(self) -> None:
        for case in self.cases.find({}, {"idempotency_key": 1, "request_hash": 1}):
            key = case.get("idempotency_key") or ""
            if key and not key.startswith("none:"):
                claim = {"case_no": case["_id"], "request_hash": case.get("request_hash")}
                self.case_keys.update_one({"_id": key}, {"$setOnInsert": claim}, upsert=True)

    def next_sequence(self, key: str) -> int:
        counter = self.counters.find_one_and_update(
            {"_id": key}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return int(counter["value"])

    def claim_key(self, key: str, case_no: str, request_hash: str) -> dict[str, Any]:
        """What an idempotency key stands for: {case_no, request_hash}, ours when the key is new,
        else an earlier request's (whose case may not be stored yet: in flight, or it died)."""
        claim = {"case_no": case_no, "request_hash": request_hash}
        try:
            found = self.case_keys.find_one_and_update(
                {"_id": key}, {"$setOnInsert": claim}, upsert=True, return_document=ReturnDocument.AFTER
            )
        except DuplicateKeyError:  # a concurrent claim inserted it first
            found = self.case_keys.find_one({"_id": key})
        return found

    def insert_case(self, doc: dict[str, Any], events: list[Envelope]) -> bool:
        """Insert; False when another case already holds the same idempotency key."""
        try:
            self.cases.insert_one({**doc, **self.outbox.fields(doc["_id"], events)})
        except DuplicateKeyError:
            self.outbox.forget(events)
            if self.by_idempotency_key(doc["idempotency_key"]) is None:
                raise  # not the idempotency index: a real conflict we do not expect
            return False
        return True

    # --- calendar and deadlines --------------------------------------------------------------------
    def save_calendar(self, year: int, holidays: list[str], workdays: list[str], by: str) -> None:
        self.calendars.replace_one(
            {"_id": year},
            {"holidays": holidays, "workdays": workdays, "loaded_by": by, "loaded_at": datetime.now(UTC)},
            upsert=True,
        )

    def calendars_loaded(self) -> list[dict[str, Any]]:
        return list(self.calendars.find({}))

    def provisional_cases(self, after: str, limit: int) -> list[dict[str, Any]]:
        """Cases whose deadline a loaded calendar may move: provisional ones, and those whose
        recomputation did not finish syncing its read models (a process that died in between)."""
        query = {**_PROVISIONAL, "_id": {"$gt": after}}
        return list(self.cases.find(query, _RECOMPUTE_FIELDS).sort("_id", ASCENDING).limit(limit))

    def provisional_case(self, case_no: str) -> dict[str, Any] | None:
        """One case as `provisional_cases` reads it, or None when its deadline is no longer one to recompute."""
        return self.cases.find_one({"_id": case_no, **_PROVISIONAL}, _RECOMPUTE_FIELDS)

    def set_deadline(self, case_no: str, version: int, fields: dict[str, Any], forgets: str | None = None) -> bool:
        """A recomputed deadline (see lifecycle.moved_deadline) over the version it was computed
        from, marked until `deadline_synced`; False when the case changed meanwhile. `forgets`: the
        guessed deadline an overdue count is to be forgotten for (forget_overdue), kept with the
        mark so that a load dying before it forgets still has it to forget next time (when the
        deadline it then reads no longer moves)."""
        # A new version: the read models replace an entry only with a newer one.
        update: dict[str, Any] = {"$set": {**fields, "deadline_recomputing": True}, "$inc": {"version": 1}}
        if forgets is not None:
            update["$addToSet"] = {"overdue_guesses": forgets}
        return self.cases.update_one({"_id": case_no, "version": version}, update).matched_count == 1

    def deadline_synced(self, case_no: str) -> None:
        self.cases.update_one({"_id": case_no}, {"$unset": {"deadline_recomputing": "", "overdue_guesses": ""}})

    # The deadline index: which running cases have their deadline on which day. The periodic check
    # reads it by _id instead of filtering every case (a full scan on FerretDB). A case enters it
    # when a sync finds it running and leaves it when a sync finds it stopped (or when the check
    # finds it stale: moved to another day, or flagged overdue). Each entry holds the case version
    # it was watched at, and only a reader of that version or a later one may take it out: a sync
    # or a check that read the case before it started running again cannot. Layout:
    # `<day>/<shard>` -> {cases: {case_no: version}}, and `days` -> {days: {<day>: <changes>}}.
    def watch_deadline(self, case_no: str, day: str, version: int) -> None:
        bucket = deadline_bucket(day, case_no)
        added = self.deadlines.update_one({"_id": bucket}, {"$max": {f"cases.{case_no}": version}}, upsert=True)
        if added.modified_count or added.upserted_id is not None:
            # Counted after the entry is in: a checker that found the day empty cannot drop it then.
            self.deadlines.update_one({"_id": "days"}, {"$inc": {f"days.{day}": 1}}, upsert=True)
        else:
            # In already (a repeated sync): make sure its day is listed at all, in case the writer
            # that added it died before counting (the check visits listed days only). A day that
            # is listed keeps its count, so a checker's drop still sees no change.
            self.deadlines.update_one({"_id": "days"}, {"$max": {f"days.{day}": 1}}, upsert=True)

    def watched_days(self) -> dict[str, int]:
        """Days with (possibly) watched cases, with their addition counts."""
        return (self.deadlines.find_one({"_id": "days"}) or {}).get("days") or {}

    def watched(self, day: str) -> list[str]:
        buckets = (self.deadlines.find_one({"_id": _bucket_id(day, shard)}) for shard in range(DEADLINE_SHARDS))
        return [case_no for bucket in buckets if bucket for case_no in bucket.get("cases") or {}]

    def unwatch(self, day: str, case_no: str, version: int | None) -> None:
        """Take the case out of the day, if it was watched at `version` or before (None: whatever
        version, for a case that no longer exists)."""
        key = f"cases.{case_no}"
        query: dict[str, Any] = {"_id": deadline_bucket(day, case_no)}
        if version is not None:
            query[key] = {"$lte": version}
        self.deadlines.update_one(query, {"$unset": {key: ""}})

    def drop_day(self, day: str, additions: int) -> bool:
        """Forget an emptied day, unless a case was added to it since its count was read."""
        query = {"_id": "days", f"days.{day}": additions}
        return self.deadlines.update_one(query, {"$unset": {f"days.{day}": ""}}).modified_count == 1

    def deadline_view(self, case_no: str) -> dict[str, Any] | None:
        fields = ("case_no", "item_code", "item_name", "department_code", "applicant", "status", "deadline", "version")
        return self.cases.find_one({"_id": case_no}, {f: 1 for f in (*fields, "deadline_warned", "overdue")})

    def flag_once(self, case_no: str, flag: str, deadline: str, statuses: list[str], event: Envelope) -> bool:
        """Set the flag with its event unless another process already did (safe with several timers),
        and only while the deadline is the one judged (one moved meanwhile cleared its flags)."""
        update = self.outbox.update(case_no, [event])
        update["$set"][flag] = True
        # A new version: a write computed from the case as read before (a calendar load clearing
        # the flag, a reviewer's action) then conflicts instead of passing over the flag unseen.
        update["$inc"] = {"version": 1}
        query = {"_id": case_no, flag: {"$ne": True}, "deadline": deadline, "status": {"$in": statuses}}
        return self.outbox.update_or_forget(query, update, [event])

    # --- supervision -------------------------------------------------------------------------------
    def forget_overdue(self, case_no: str, guessed: str | None) -> None:
        """A loaded calendar moved a case's deadline from `guessed` (a weekends-only guess) past
        today: an overdue counted against that deadline was never real (see supervision). One
        counted against an earlier, real deadline stays. Facts from before 29 November 2026 do not
        say their deadline: forgotten as before."""
        judged = [{"deadline": guessed}, {"deadline": {"$exists": False}}]
        self.facts.delete_one({"_id": overdue_fact_id(case_no), "$or": judged})

    def add_fact(self, fact: dict[str, Any]) -> bool:
        try:
            self.facts.insert_one(fact)
        except DuplicateKeyError:
            return False  # this event was counted already
        return True

    def fact_sums(self, department_code: str | None, first: str | None, last: str | None) -> list[dict[str, Any]]:
        match: dict[str, Any] = {}
        if department_code:
            match["department_code"] = department_code
        if first or last:
            match["day"] = {**({"$gte": first} if first else {}), **({"$lte": last} if last else {})}
        # One accumulator per pipeline: FerretDB v1 returns 0 for every $sum after the first in a $group.
        sums: dict[str, dict[str, Any]] = {}
        for field, expression in (("count", 1), *((f, f"${f}") for f in ("auto", "on_time", "hours", "score", "bad"))):
            pipeline = [{"$match": match}, {"$group": {"_id": "$kind", "value": {"$sum": expression}}}]
            for row in self.facts.aggregate(pipeline):
                sums.setdefault(row["_id"], {"_id": row["_id"]})[field] = row["value"]
        return list(sums.values())

    def count_in_progress(self, department_code: str | None, statuses: list[str]) -> int:
        query: dict[str, Any] = {"status": {"$in": statuses}}
        if department_code:
            query["department_code"] = department_code
        return self.cases.count_documents(query)

    # --- documents ----------------------------------------------------------------------------------
    def begin_document(self, document_id: str, owner: str, now: datetime) -> None:
        self.documents.insert_one({"_id": document_id, "owner": owner, "status": "uploading", "created_at": now})

    def document(self, document_id: str) -> dict[str, Any] | None:
        return self.documents.find_one({"_id": document_id})

    # Chunks are found by _id (`<document_id>:<n>`): a filter on document_id is a full scan on
    # FerretDB, over every upload's bytes. The document records which chunks arrived.
    def add_chunk(self, document_id: str, n: int, data: bytes) -> None:
        # Keyed by position: a retried chunk replaces itself instead of duplicating.
        self.document_chunks.replace_one(
            {"_id": _chunk_id(document_id, n)}, {"document_id": document_id, "n": n, "data": Binary(data)}, upsert=True
        )
        # After the chunk is in: the record never claims a chunk that is not stored.
        self.documents.update_one({"_id": document_id}, {"$set": {f"received.{n}": True}})

    def chunk_count(self, document_id: str) -> int:
        return len((self.document(document_id) or {}).get("received") or {})

    def finish_document(self, document_id: str, fields: dict[str, Any]) -> bool:
        result = self.documents.update_one(
            {"_id": document_id, "status": "uploading"}, {"$set": {**fields, "status": "complete"}}
        )
        return result.modified_count == 1

    def drop_document(self, document_id: str) -> None:
        # Chunks are sent in order: the one after the last recorded may be stored, unrecorded.
        for n in range(self.chunk_count(document_id) + 1):
            self.document_chunks.delete_one({"_id": _chunk_id(document_id, n)})
        self.documents.delete_one({"_id": document_id})

    def owned_documents(self, owner: str, document_ids: list[str]) -> set[str]:
        """Which of these are complete documents of this owner (one _id lookup each: a case offers a few)."""
        found = (self.documents.find_one({"_id": d}, {"owner": 1, "status": 1}) for d in dict.fromkeys(document_ids))
        return {d["_id"] for d in found if d is not None and d["owner"] == owner and d["status"] == "complete"}

    def by_idempotency_key(self, key: str) -> dict[str, Any] | None:
        claim = self.case_keys.find_one({"_id": key})
        if claim is None:
            return None
        return self.cases.find_one({"_id": claim["case_no"], "idempotency_key": key}, {"outbox": 0})

    def get(self, case_no: str) -> dict[str, Any] | None:
        return self.cases.find_one({"_id": case_no}, {"outbox": 0})

    def list_for_applicant(
        self, user_id: str, status: str | None, skip: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """From the applicant's read model, newest first: the months the page falls into (every
        month when filtered by status), each a document found by _id."""
        keep = (lambda entry: entry["status"] == status) if status else None
        rows, total = self.my_cases.page(user_id, skip, limit, keep)
        return [entry for _, entry in rows], total

    def sync_views(self, case_no: str, case: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Bring the applicant's and the department's read models in line with the case as it is now.

        Called after every write, before the write's events are published; the outbox relay calls
        it again before it publishes an event its writer left behind (which repairs a process that
        died in between). Each entry carries the case version and is only replaced by a newer one.
        `case`: the case as the caller just wrote it (at least its SYNC_FIELDS), which saves reading
        it back; a newer version written meanwhile is safe, since every entry keeps the newest.
        Returns the case as used (read: its SYNC_FIELDS; given: as given), None if there is none.
        (Marking the case as synced, to skip repeated calls, cost more than it saved: FerretDB
        rewrites the whole case document for every update.)
        """
        if case is None:
            case = self.cases.find_one({"_id": case_no}, dict.fromkeys(SYNC_FIELDS, 1))
        if case is None:
            return None
        version = case.get("version", 0)
        entry = {field: case.get(field) for field in VIEW_FIELDS}
        owner, department = case["applicant"]["user_id"], case["department_code"]
        if case.get("deadline"):
            # Only running cases stay in the deadline index: a decided case (most are decided in
            # seconds by the rules) leaves it at once instead of when its day comes, so its buckets
            # hold the cases still waiting, not every case of a day.
            if case["status"] in TASK_STATUSES:
                self.watch_deadline(case_no, case["deadline"], version)
            else:
                self.unwatch(case["deadline"], case_no, version)
        self.my_cases.put(owner, entry["submitted_at"], case_no, entry, version)
        is_task = bool(case.get("awaiting_review")) and case["status"] in TASK_STATUSES
        # A case that never waited for a person has no place on the task board to leave (most are
        # decided by the rules): no pointer to look up. Cases from before the mark lack it.
        if is_task or case.get("ever_task") is not False:
            self.task_board.sync(department, case_no, entry, is_task)
        return case

    def apply_event(
        self,
        case_no: str,
        event_id: str,
        allowed_from: list[str],
        set_fields: dict[str, Any],
        timeline_entry: dict[str, Any] | None = None,
        announce: list[Envelope] | None = None,
        extra_filter: dict[str, Any] | None = None,
    ) -> dict[str, Any] | None:
        """Apply one event's change once: the event id is recorded in the same atomic update, and
        so are the events that announce the change (`announce`, through the outbox). Returns the
        case as written (for `sync_views`), None when the change did not apply. (The whole case:
        FerretDB's findAndModify takes no projection. It costs less than an update and a read.)"""
        push: dict[str, Any] = {"applied_events": event_id}
        if timeline_entry is not None:
            push["timeline"] = timeline_entry
        update: dict[str, Any] = {"$set": marked_if_task(set_fields), "$push": push, "$inc": {"version": 1}}
        if announce:
            update["$set"].update(self.outbox.update(case_no, announce)["$set"])
        query = {"_id": case_no, "applied_events": {"$ne": event_id}, "status": {"$in": allowed_from}}
        query.update(extra_filter or {})
        written = self.cases.find_one_and_update(query, update, return_document=ReturnDocument.AFTER)
        if written is None and announce:
            self.outbox.forget(announce)
        return written

    def transition(self, case_no: str, change: Change, event: Envelope) -> bool:
        """Apply a lifecycle change if the case is still in the status and version it was read in."""
        update = self.outbox.update(case_no, [event])
        update["$set"].update(marked_if_task(change.set_fields))
        update["$inc"] = {"version": 1}
        if change.timeline is not None:
            update["$push"] = {"timeline": change.timeline}
        query = {"_id": case_no, "status": change.from_status, "version": change.version, **change.extra_filter}
        return self.outbox.update_or_forget(query, update, [event])

    def tasks(
        self, department_code: str, statuses: list[str], skip: int, limit: int
    ) -> tuple[list[dict[str, Any]], int]:
        """From the department's task board, earliest deadline first."""
        return self.task_board.page(department_code, statuses, skip, limit)

    def prune_task_board(self, before_day: str) -> int:
        return self.task_board.prune(before_day)


def marked_if_task(fields: dict[str, Any]) -> dict[str, Any]:
    """The fields of a write, with `ever_task` set for good when the write makes the case wait for a
    person (new cases start with it false; `sync_views` skips the task board while it is)."""
    return {**fields, "ever_task": True} if fields.get("awaiting_review") else dict(fields)


def _chunk_id(document_id: str, n: int) -> str:
    return f"{document_id}:{n:06d}"


def deadline_bucket(day: str, case_no: str) -> str:
    """The deadline index bucket a case due on `day` is filed under."""
    return _bucket_id(day, zlib.crc32(case_no.encode()) % DEADLINE_SHARDS)


def _bucket_id(day: str, shard: int) -> str:
    return f"{day}/{shard:03d}"
