"""Storage of the reviewers' task lists: each department's waiting cases, split into slots by
deadline day and quarter of the day they were submitted in.

The list is ordered by deadline, then by the quarter of the (UTC) day the case was submitted in,
then submission time; slots (`<deadline>/<quarter>`) sort the same way. (Cases of one deadline
submitted on different days are therefore not strictly first come, first served: a morning
submission can precede the previous evening's. The API promises earliest deadline first only.)

One document per department and slot (`department_tasks`, `<dept>/<slot>`) holds
the entries; one small document per department (`department_task_days`, `<dept>`) holds how many
cases of each status every slot has. A page reads the small document and then only the slot
documents the page falls into. (With a million cases a department had 7,000 waiting cases; as
one document that took FerretDB 2.8 s to read: it decodes the whole document, ~70 µs an entry.)

A case can move between slots (acceptance sets the deadline anew, a loaded holiday table shifts
it), so `task_pointers` (`<case_no>`) remembers the slot it is filed under and any slot it still
has to be taken out of; a sync that died half-way is finished by the next one (the outbox relay
syncs before it publishes an event whose writer died before publishing it). Slots of past deadlines
that are empty are pruned from the summary (`prune`), which stays as long as the open deadlines.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Any

from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.common.mongo import absent_or_below, update_entry
from services.common.paging import plan_page

NO_DEADLINE = "9999-12-31"  # sorts after every real deadline


def slot_of(entry: dict[str, Any]) -> str:
    """`<deadline>/<quarter of the UTC day it was submitted in>`: sorts like the list itself."""
    submitted: datetime = entry["submitted_at"]
    return f"{entry.get('deadline') or NO_DEADLINE}/{submitted.hour // 6}"


class TaskBoard:
    def __init__(self, db: Database) -> None:
        self.buckets = db["department_tasks"]
        self.days = db["department_task_days"]
        self.pointers = db["task_pointers"]

    # --- writing --------------------------------------------------------------------------------------
    def sync(self, department: str, case_no: str, entry: dict[str, Any], is_task: bool) -> None:
        """File the case under its deadline slot if it is a task, out of every other slot otherwise."""
        version = entry["version"] or 0
        slot = slot_of(entry) if is_task else None
        pointer = self._move_pointer(case_no, version, slot)
        if pointer is None:
            return  # a newer state of this case was filed already, or it never was a task
        if slot is not None:
            self._put(department, slot, case_no, entry)
            # A newer sync may have moved the pointer meanwhile and cleaned up before this put
            # landed: then this entry is stale, and taking it out is ours to do.
            latest = self.pointers.find_one({"_id": case_no}) or {}
            if latest.get("version", version) > version or latest.get("slot") != slot:
                self._take_out(department, slot, case_no, version)
        for old in pointer.get("leaving") or []:
            if old != slot:
                self._take_out(department, old, case_no, version)
                self.pointers.update_one({"_id": case_no}, {"$pull": {"leaving": old}})

    def _move_pointer(self, case_no: str, version: int, slot: str | None) -> dict[str, Any] | None:
        """Advance the pointer to this version and slot (compare-and-set); the result lists the days
        to leave. None when the pointer already holds a newer version."""
        for _ in range(10):
            current = self.pointers.find_one({"_id": case_no})
            if current is None:
                if slot is None:
                    return None  # not a task now and never filed: nothing to do (most cases)
                try:
                    self.pointers.insert_one({"_id": case_no, "version": version, "slot": slot, "leaving": []})
                except DuplicateKeyError:
                    continue  # someone else created it: compare again
                return {"leaving": []}
            if current["version"] > version:
                return None
            leaving = set(current.get("leaving") or [])
            if current["slot"] and current["slot"] != slot:
                leaving.add(current["slot"])
            moved = self.pointers.update_one(
                {"_id": case_no, "version": current["version"], "slot": current["slot"]},
                {"$set": {"version": version, "slot": slot, "leaving": sorted(leaving)}},
            )
            if moved.matched_count == 1:
                return {"leaving": sorted(leaving)}
        raise RuntimeError(f"task pointer of {case_no} kept changing")

    def _put(self, department: str, slot: str, case_no: str, entry: dict[str, Any]) -> None:
        key = f"tasks.{case_no}"
        newer = absent_or_below(key, "version", entry["version"] or 0)
        change = {"$set": {key: entry}, "$inc": {"rev": 1}}
        update_entry(self.buckets, f"{department}/{slot}", newer, change, {"tasks": {}, "rev": 0})
        # Even when the entry was there already: a sync that died between the put and its recount
        # is finished by the next sync, which puts nothing (the slot's count stayed one short).
        self._recount(department, slot)

    def _take_out(self, department: str, slot: str, case_no: str, version: int) -> None:
        bucket, key = f"{department}/{slot}", f"tasks.{case_no}"
        query = {"_id": bucket, f"{key}.version": {"$lte": version}}
        self.buckets.update_one(query, {"$unset": {key: ""}, "$inc": {"rev": 1}})
        self._recount(department, slot)  # even when out already, as after a put

    def _recount(self, department: str, slot: str) -> None:
        """Copy a slot's status counts into the department's summary; a later revision always wins."""
        bucket = self.buckets.find_one({"_id": f"{department}/{slot}"}) or {"tasks": {}, "rev": 0}
        counts = Counter(t["status"] for t in bucket["tasks"].values())
        key = f"days.{slot}"
        change = {"$set": {key: {"rev": bucket["rev"], "counts": dict(counts)}}}
        update_entry(self.days, department, absent_or_below(key, "rev", bucket["rev"]), change, {"days": {}})

    def prune(self, before_day: str) -> int:
        """Forget the empty slots of deadlines before `before_day`: a department's summary gained a
        slot for every deadline day that ever had a task and kept it, empty, for ever (a thousand
        a year), and every task change rewrites that document and every page reads it whole. Only
        a slot still empty at the revision read goes; how many went. Its bucket document stays,
        and with it the slot's revision: deleted, a bucket filed again would count from 1, below
        what a late recount may have put back in the summary, and its count would be refused."""
        pruned = 0
        for summary in self.days.find({}):
            for slot, entry in (summary.get("days") or {}).items():
                if entry["counts"] or slot.split("/", 1)[0] >= before_day:
                    continue
                key = f"days.{slot}"
                gone = self.days.update_one({"_id": summary["_id"], f"{key}.rev": entry["rev"]}, {"$unset": {key: ""}})
                pruned += gone.modified_count
        return pruned

    # --- reading --------------------------------------------------------------------------------------
    def page(self, department: str, statuses: list[str], skip: int, limit: int) -> tuple[list[dict[str, Any]], int]:
        """Earliest deadline first, then submission quarter and time; and how many there are in all."""
        summary = (self.days.find_one({"_id": department}) or {}).get("days") or {}
        sizes = [
            (slot, sum(summary[slot]["counts"].get(s, 0) for s in statuses))
            for slot in sorted(summary)
            if any(summary[slot]["counts"].get(s) for s in statuses)
        ]
        rows: list[dict[str, Any]] = []
        for slot, offset, take in plan_page(sizes, skip, limit):
            bucket = self.buckets.find_one({"_id": f"{department}/{slot}"}) or {"tasks": {}}
            waiting = [t for t in bucket["tasks"].values() if t["status"] in statuses]
            waiting.sort(key=lambda t: (t["submitted_at"], t["case_no"]))
            rows.extend(waiting[offset : offset + take])
        return rows, sum(size for _, size in sizes)
