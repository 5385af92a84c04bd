"""Transactional outbox without transactions.

Pending events are written into the very document whose change they announce, in the same
single-document write (`outbox: {event_id: envelope}`), so a crash between "store" and "publish"
loses nothing.

How the relay finds them: each pending event also has a small marker document
(`<collection>_outbox`, `_id` = event id) written *just before* the document write and deleted
after the event is published. The relay reads only that small collection, never the (large) data
collection: the document server behind FerretDB answers nothing but `_id` equality from an index,
so filtering a million cases for pending events every two seconds was a full scan each time.
A marker whose write never happened (a conflict, a crash in between) points at no event; the
relay removes it once it is older than any write can take.

Published markers are deleted in batches, one command for many events (a delete costs the
document server as much as an update; one per event was three commands per case). That is safe
because publishing takes the event out of its document at once: a marker left over a little
longer points at no event, so no relay publishes it again, and a process that dies before its
batch leaves only orphans, removed as above.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.collection import Collection
from pymongo.errors import PyMongoError

from contracts.envelope import Envelope
from services.common.stored_time import as_utc
from services.common.telemetry import current_traceparent

log = logging.getLogger(__name__)

# Markers older than this with no event in their document are orphans (the write never happened).
ORPHAN_AFTER = timedelta(minutes=5)
# A batch of published markers is deleted once it holds this many, or once its first is this old
# (checked at the next publish; the relay's round and the process's stop flush what is left).
FLUSH_SIZE = 50
FLUSH_AFTER = 0.25  # seconds
# Pages of markers a relay round reads at most (see `pending`).
MAX_PAGES = 10


class OutboxCollection:
    """Storage side of the outbox for one collection."""

    def __init__(self, collection: Collection, clock: Callable[[], float] = time.monotonic) -> None:
        self.collection = collection
        self.markers = collection.database[f"{collection.name}_outbox"]
        self._clock = clock
        self._published: list[str] = []  # markers of published events, not deleted yet
        self._batch_started: float | None = None

    def ensure_indexes(self) -> None:
        self.markers.create_index([("at", ASCENDING)])

    # --- writing: call right before the document write that carries the events --------------------
    def fields(self, doc_id: Any, events: Iterable[Envelope]) -> dict[str, Any]:
        """Fields to include in a newly inserted document (its markers are written now)."""
        events = self._stage(doc_id, events)
        return {"outbox": {e.event_id: e.model_dump(mode="json") for e in events}}

    def update(self, doc_id: Any, events: Iterable[Envelope]) -> dict[str, Any]:
        """Update operators that queue events on an existing document (merge with your own)."""
        events = self._stage(doc_id, events)
        return {"$set": {f"outbox.{e.event_id}": e.model_dump(mode="json") for e in events}}

    def update_or_forget(self, query: dict[str, Any], update: dict[str, Any], events: list[Envelope]) -> bool:
        """Write `update` (which queues `events`, built on `update()`) where `query` holds; False,
        and the events forgotten, when nothing changed (a conflict: they were never queued)."""
        if self.collection.update_one(query, update).modified_count == 1:
            return True
        self.forget(events)
        return False

    def forget(self, events: Iterable[Envelope]) -> None:
        """The write did not happen (a conflict): drop its markers now rather than as orphans later."""
        ids = [e.event_id for e in events]
        if ids:
            self.markers.delete_many({"_id": {"$in": ids}})

    def _stage(self, doc_id: Any, events: Iterable[Envelope]) -> list[Envelope]:
        events = list(events)
        if events:
            now, trace = datetime.now(UTC), current_traceparent()  # the relay continues the writer's trace
            self.markers.insert_many(
                [{"_id": e.event_id, "doc_id": doc_id, "at": now, "traceparent": trace} for e in events]
            )
        return events

    # --- relaying -----------------------------------------------------------------------------------
    def pending(self, older_than: timedelta, limit: int = 100) -> list[tuple[Any, dict[str, Any], str | None]]:
        """(document id, envelope, the writer's `traceparent`) for markers older than `older_than`,
        oldest first (the traceparent None for markers written before they kept one).

        Markers that point at no event (published by a process that died before its batch was
        deleted, or a write still in flight) are read past, up to MAX_PAGES pages, so that they
        cannot hide the events really pending behind them until they count as orphans."""
        now = datetime.now(UTC)
        older = {"at": {"$lt": now - older_than}}
        found: list[tuple[Any, dict[str, Any], str | None]] = []
        orphans, read = [], 0
        for _ in range(MAX_PAGES):
            page = list(self.markers.find(older).sort("at", ASCENDING).skip(read).limit(limit))
            read += len(page)
            for marker in page:
                doc = self.collection.find_one({"_id": marker["doc_id"]}, {f"outbox.{marker['_id']}": 1})
                event = ((doc or {}).get("outbox") or {}).get(marker["_id"])
                if event is not None:
                    found.append((marker["doc_id"], event, marker.get("traceparent")))
                elif as_utc(marker["at"]) < now - ORPHAN_AFTER:
                    orphans.append(marker["_id"])
            if len(page) < limit or len(found) >= limit:
                break
        if orphans:
            self.markers.delete_many({"_id": {"$in": orphans}})
        return found

    def put_back(self, event_id: str, at: datetime) -> int:
        """A pending event that did not go out this round (its preparation or its publish failed):
        its marker goes behind the others (`at`), so that events that keep failing cannot fill every
        round's page and hold back those behind them for ever. Returns the rounds it has failed."""
        marker = self.markers.find_one_and_update(
            {"_id": event_id}, {"$set": {"at": at}, "$inc": {"failures": 1}}, return_document=ReturnDocument.AFTER
        )
        return int((marker or {}).get("failures", 0))

    def mark_published(self, doc_id: Any, event_id: str) -> None:
        """Take the event out of its document now; its marker goes with the next batch."""
        self.collection.update_one({"_id": doc_id}, {"$unset": {f"outbox.{event_id}": ""}})
        self._published.append(event_id)
        if self._batch_started is None:
            self._batch_started = self._clock()
        if len(self._published) >= FLUSH_SIZE or self._clock() - self._batch_started >= FLUSH_AFTER:
            self.flush()

    def flush(self) -> None:
        """Delete the markers of the events published so far (one command). A failure keeps them
        for the next flush: the events are published either way."""
        # Taken before the delete: greenthreads publishing meanwhile start the next batch.
        ids, self._published, self._batch_started = self._published, [], None
        if not ids:
            return
        try:
            self.markers.delete_many({"_id": {"$in": ids}})
        except BaseException as exc:  # a timeout or a kill too: the ids stay for the next flush
            self._published = ids + self._published
            self._batch_started = self._batch_started or self._clock()
            if not isinstance(exc, PyMongoError):
                raise
            log.warning("could not delete published markers; kept for the next flush", extra={"count": len(ids)})

    def clear(self, doc_ids: list[Any]) -> None:
        """Mark every pending event of these documents published (after a bulk publish)."""
        self.collection.update_many({"_id": {"$in": doc_ids}}, {"$set": {"outbox": {}}})
        self.markers.delete_many({"doc_id": {"$in": doc_ids}})
