"""Per-owner lists, newest first, kept as one document per owner and month: an applicant's cases,
a person's inbox.

Why: FerretDB rewrites a whole document for every entry set (3 ms with 100 entries, 18 ms with
1,000, over 500 ms with 10,000: `make bench`), and MongoDB refuses any document over 16 MB. One
document per owner grew without bound, so a company filing hundreds of cases slowed every write
of its own and, through the store's per-collection update lock, everyone else's.

Layout: `<owner>/<YYYY-MM>` -> {items: {key: entry}} (the month in China of the entry's moment),
and `<owner>` -> {months: {YYYY-MM: entries}} in a second collection, so a page reads that small
document and then only the months it falls into. Entries are added and replaced, never removed.
A count is raised after its entry is added; if a process dies in between, the repeated write
(a redelivery, the outbox relay) makes sure the month is counted, and the next page read that
finds a month's size and count apart sets the count to the size (a page may be one entry off
until then).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from pymongo.collection import Collection

from services.common.china_time import CHINA
from services.common.mongo import update_entry
from services.common.paging import plan_page
from services.common.stored_time import as_utc

Row = tuple[str, dict[str, Any]]  # (key, entry)


def month_of(moment: datetime) -> str:
    """The month in China of a moment (a naive one is UTC, as pymongo returns them)."""
    return as_utc(moment).astimezone(CHINA).strftime("%Y-%m")


class MonthlyLists:
    def __init__(self, months: Collection, counts: Collection, newest_first: Callable[[Row], Any]) -> None:
        self.months = months
        self.counts = counts
        self.order = newest_first  # a sort key: rows sort by it, descending, within a month

    # --- writing --------------------------------------------------------------------------------------
    def put(self, owner: str, moment: datetime, key: str, entry: dict[str, Any], version: int | None = None) -> None:
        """Add the entry, or (with `version`: entries then carry one) replace an older version of it.
        Idempotent: a repeated put changes nothing."""
        month = month_of(moment)
        doc_id, path = f"{owner}/{month}", f"items.{key}"
        if version is not None and version > 1 and self._replace(doc_id, path, entry, version):
            return  # the usual later write of an entry: one command
        count = f"months.{month}"
        # Added where absent, the month's document created first if need be (update_entry decides
        # by the entry, not by the document, so a document another writer creates meanwhile
        # cannot make ours look like a repeat).
        absent = {path: {"$exists": False}}
        if update_entry(self.months, doc_id, absent, {"$set": {path: entry}}, {"items": {}}).modified_count:
            self.counts.update_one({"_id": owner}, {"$inc": {count: 1}}, upsert=True)
            return
        # There already (a repeat, or a newer version): make sure its month is counted at all, in
        # case the writer that added it died before counting (a page read repairs the number).
        self.counts.update_one({"_id": owner}, {"$max": {count: 1}}, upsert=True)
        if version is not None:
            self._replace(doc_id, path, entry, version)

    def _replace(self, doc_id: str, path: str, entry: dict[str, Any], version: int) -> bool:
        older = {"_id": doc_id, f"{path}.version": {"$lt": version}}
        return self.months.update_one(older, {"$set": {path: entry}}).modified_count == 1

    def set_fields(self, owner: str, moment: datetime, key: str, fields: dict[str, Any]) -> None:
        """Change fields of an entry that is there (nothing when it is not)."""
        doc_id, path = f"{owner}/{month_of(moment)}", f"items.{key}"
        change = {f"{path}.{name}": value for name, value in fields.items()}
        self.months.update_one({"_id": doc_id, path: {"$exists": True}}, {"$set": change})

    # --- reading --------------------------------------------------------------------------------------
    def exists(self, owner: str) -> bool:
        """Whether the owner's list was ever written (or migrated): its counts document is there."""
        return self.counts.find_one({"_id": owner}, {"_id": 1}) is not None

    def create(self, owner: str) -> None:
        """Record an empty list for the owner (so `exists` holds from now on)."""
        self.counts.update_one({"_id": owner}, {"$setOnInsert": {"months": {}}}, upsert=True)

    def page(
        self, owner: str, skip: int, limit: int, keep: Callable[[dict[str, Any]], bool] | None = None
    ) -> tuple[list[Row], int]:
        """Rows newest first, and how many there are in all. Unfiltered, only the months the page
        falls into are read; with `keep`, every month is (counts do not say how many it keeps)."""
        counted = (self.counts.find_one({"_id": owner}) or {}).get("months") or {}
        newest = sorted(counted, reverse=True)
        if keep is not None:
            rows = [row for month in newest for row in self._month(owner, month, counted[month]) if keep(row[1])]
            return rows[skip : skip + limit], len(rows)
        rows = []
        for month, offset, take in plan_page([(m, counted[m]) for m in newest], skip, limit):
            rows.extend(self._month(owner, month, counted[month])[offset : offset + take])
        return rows, sum(counted.values())

    def _month(self, owner: str, month: str, counted: int) -> list[Row]:
        items = (self.months.find_one({"_id": f"{owner}/{month}"}) or {}).get("items") or {}
        if len(items) != counted:
            # A writer died between its entry and its count, or is between them now, or such a
            # repair ran just before a writer's count landed: set the number we see, unless the
            # count changed since we read it. Entries are never removed, so the next read that
            # finds a difference corrects it, either way.
            key = f"months.{month}"
            self.counts.update_one({"_id": owner, key: counted}, {"$set": {key: len(items)}})
        return sorted(items.items(), key=self.order, reverse=True)
