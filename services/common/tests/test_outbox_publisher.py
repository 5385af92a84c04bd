import contextlib
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from pymongo.errors import AutoReconnect

from contracts.envelope import Envelope, new_event
from contracts.events import CaseSubmitted, ItemPublished
from services.common import outbox as outbox_module
from services.common.mongo import Storage
from services.common.publishing import RELAY_GRACE, Publisher


def _submitted(case_no="620524MZ-20261126-000001"):
    payload = CaseSubmitted(
        case_no=case_no,
        item_code="62052400MZ-GF-0001",
        item_version=1,
        item_name="高龄津贴申领",
        department_code="620524MZ",
        applicant_id="u1",
        form={"bank_account": "6222020200112233445"},
        material_codes=[],
        submitted_at=datetime(2026, 11, 26, 2, 0, tzinfo=UTC),
    )
    return new_event(payload, producer="intake")


def _published():
    return new_event(ItemPublished(item_code="62052400MZ-GF-0001", version=2, department_code="620524MZ"), "catalog")


class FakeDispatch:
    def __init__(self, fail_on=()):
        self.sent = []
        self.fail_on = set(fail_on)

    def __call__(self, event_type, body):
        if body["event_id"] in self.fail_on:
            raise ConnectionError("broker gone")
        self.sent.append((event_type, body))


class FakeOutbox:
    def __init__(self, pending=()):
        self._pending = list(pending)
        self.marked = []
        self.pending_calls = []
        self.calls = []

    def pending(self, older_than, limit=100):
        """As the store's: (doc id, event, traceparent); given as pairs, no traceparent."""
        self.pending_calls.append(older_than)
        self.calls.append("pending")
        return [entry if len(entry) == 3 else (*entry, None) for entry in self._pending]

    def flush(self):
        self.calls.append("flush")

    def mark_published(self, doc_id, event_id):
        self.marked.append((doc_id, event_id))

    def put_back(self, event_id, at):
        self.calls.append(("put_back", event_id, at))
        return 1


def test_publish_dispatches_by_event_type_and_marks_each_event():
    dispatch, outbox = FakeDispatch(), FakeOutbox()
    first, second = _submitted(), _published()
    sent = Publisher(dispatch).publish(outbox, "doc-1", [first, second])
    assert sent == 2
    assert dispatch.sent == [
        ("case.submitted.v1", first.model_dump(mode="json")),
        ("catalog.item_published.v1", second.model_dump(mode="json")),
    ]
    assert outbox.marked == [("doc-1", first.event_id), ("doc-1", second.event_id)]


def test_published_body_is_plain_json():
    dispatch = FakeDispatch()
    Publisher(dispatch).publish(FakeOutbox(), "doc-1", [_submitted()])
    _, body = dispatch.sent[0]
    assert isinstance(body["occurred_at"], str)
    assert body["payload"]["submitted_at"] == "2026-11-26T02:00:00Z"


def test_publish_accepts_stored_dicts():
    dispatch, outbox = FakeDispatch(), FakeOutbox()
    raw = _submitted().model_dump(mode="json")
    assert Publisher(dispatch).publish(outbox, "doc-1", [raw]) == 1
    assert dispatch.sent == [("case.submitted.v1", raw)]
    assert outbox.marked == [("doc-1", raw["event_id"])]


def test_a_mark_that_fails_after_the_publish_is_left_for_the_relay_not_raised(caplog):
    # The write and the publish both happened: raising would answer the caller 503, and a retry of
    # a publish or a password change would act twice. The relay sends the event again instead.
    class StoreGoneAfterPublish(FakeOutbox):
        def mark_published(self, doc_id, event_id):
            raise AutoReconnect("store gone")

    dispatch = FakeDispatch()
    first, second = _submitted("A"), _submitted("B")
    assert Publisher(dispatch).publish(StoreGoneAfterPublish(), "doc-1", [first, second]) == 2
    assert [body["event_id"] for _, body in dispatch.sent] == [first.event_id, second.event_id]
    assert "published but not marked" in caplog.text


def test_dispatch_failure_is_left_for_the_relay():
    first, second, third = _submitted("A"), _submitted("B"), _submitted("C")
    dispatch, outbox = FakeDispatch(fail_on={second.event_id}), FakeOutbox()
    sent = Publisher(dispatch).publish(outbox, "doc-1", [first, second, third])
    assert sent == 1
    assert [body["event_id"] for _, body in dispatch.sent] == [first.event_id]
    # Neither the failed event nor any later one is marked: they stay pending, in order.
    assert outbox.marked == [("doc-1", first.event_id)]


def test_publish_nothing():
    dispatch, outbox = FakeDispatch(), FakeOutbox()
    assert Publisher(dispatch).publish(outbox, "doc-1", []) == 0
    assert dispatch.sent == [] and outbox.marked == []


def test_invalid_envelope_is_never_dispatched_and_does_not_block_the_rest():
    raw = _submitted().model_dump(mode="json")
    del raw["payload"]["case_no"]
    good = _published()
    dispatch, outbox = FakeDispatch(), FakeOutbox()
    assert Publisher(dispatch).publish(outbox, "doc-1", [raw, good]) == 1
    assert [body["event_id"] for _, body in dispatch.sent] == [good.event_id]
    assert outbox.marked == [("doc-1", good.event_id)]


def test_unknown_event_type_is_never_dispatched():
    raw = _submitted().model_dump(mode="json")
    raw["type"] = "case.exploded.v1"
    dispatch = FakeDispatch()
    assert Publisher(dispatch).publish(FakeOutbox(), "doc-1", [raw]) == 0
    assert dispatch.sent == []


def test_relay_publishes_every_pending_event_under_its_document():
    a1, a2, b1 = _submitted("A"), _published(), _submitted("B")
    outbox = FakeOutbox(
        [("A", a1.model_dump(mode="json")), ("A", a2.model_dump(mode="json")), ("B", b1.model_dump(mode="json"))]
    )
    dispatch = FakeDispatch()
    assert Publisher(dispatch).relay(outbox) == 3
    assert outbox.marked == [("A", a1.event_id), ("A", a2.event_id), ("B", b1.event_id)]
    assert [body["event_id"] for _, body in dispatch.sent] == [a1.event_id, a2.event_id, b1.event_id]


def test_relay_finishes_the_writers_work_before_each_event_goes_out():
    a, b = _submitted("A"), _submitted("B")
    outbox = FakeOutbox([("A", a.model_dump(mode="json")), ("B", b.model_dump(mode="json"))])
    order = []
    publisher = Publisher(lambda event_type, body: order.append(("published", body["event_id"])))
    prepared = lambda doc_id, event: order.append(("prepared", doc_id, event["event_id"]))  # noqa: E731
    assert publisher.relay(outbox, before_publish=prepared) == 2
    assert order == [
        ("prepared", "A", a.event_id),
        ("published", a.event_id),
        ("prepared", "B", b.event_id),
        ("published", b.event_id),
    ]


def test_an_event_whose_preparation_fails_waits_and_the_others_go_out():
    a, b = _submitted("A"), _submitted("B")
    outbox = FakeOutbox([("A", a.model_dump(mode="json")), ("B", b.model_dump(mode="json"))])
    dispatch = FakeDispatch()

    def prepare(doc_id, event):
        if doc_id == "A":
            raise KeyError("applicant")

    assert Publisher(dispatch).relay(outbox, before_publish=prepare) == 1
    assert [body["event_id"] for _, body in dispatch.sent] == [b.event_id]
    assert outbox.marked == [("B", b.event_id)]


def test_relay_leaves_fresh_entries_to_their_request_by_default():
    outbox = FakeOutbox()
    Publisher(FakeDispatch()).relay(outbox)
    assert outbox.pending_calls == [RELAY_GRACE]
    assert timedelta(0) < RELAY_GRACE
    Publisher(FakeDispatch()).relay(outbox, older_than=timedelta(0))
    assert outbox.pending_calls[-1] == timedelta(0)


def test_relay_publishes_in_the_trace_of_the_request_that_wrote_the_event():
    from opentelemetry import trace

    traced = []

    def dispatch(event_type, body):
        traced.append(format(trace.get_current_span().get_span_context().trace_id, "032x"))

    writer_trace = "0af7651916cd43dd8448eb211c80319c"
    first, second = _submitted("A"), _submitted("B")
    stuck = _submitted("C").model_dump(mode="json")
    stuck["occurred_at"] = (datetime.now(UTC) - timedelta(minutes=10)).isoformat()
    parent = f"00-{writer_trace}-b7ad6b7169203331-01"
    outbox = FakeOutbox(
        [("doc-1", first.model_dump(mode="json"), parent), ("doc-2", second, None), ("doc-3", stuck, parent)]
    )
    assert Publisher(dispatch).relay(outbox) == 3
    assert traced[0] == writer_trace  # the case's trace goes on past the failed publish
    assert traced[1] != writer_trace  # a marker from before they kept one: the relay's own
    assert traced[2] != writer_trace  # stuck for long (an outage): no span per retry piled onto the case


def test_relay_goes_on_after_a_failed_event():
    a, b = _submitted("A"), _submitted("B")
    outbox = FakeOutbox([("A", a.model_dump(mode="json")), ("B", b.model_dump(mode="json"))])
    dispatch = FakeDispatch(fail_on={a.event_id})
    assert Publisher(dispatch).relay(outbox) == 1
    assert outbox.marked == [("B", b.event_id)]


def put_backs(outbox):
    return [(event_id, at) for call in outbox.calls if call[0] == "put_back" for _, event_id, at in [call]]


def test_events_that_did_not_go_out_are_put_behind_the_others_with_their_documents_later_ones():
    # 100 events whose preparation kept failing filled every round's page: the events behind them
    # waited for ever. And after a failed publish, the same document's next event overtook it.
    a1, a2, b, c = _submitted("A"), _published(), _submitted("B"), _submitted("C")
    outbox = FakeOutbox([("A", e.model_dump(mode="json")) for e in (a1, a2)] + [("B", b.model_dump(mode="json"))])
    outbox._pending.append(("C", c.model_dump(mode="json")))
    dispatch = FakeDispatch(fail_on={a1.event_id})

    def prepare(doc_id, event):
        if doc_id == "B":
            raise KeyError("applicant")

    assert Publisher(dispatch).relay(outbox, before_publish=prepare) == 1
    assert [body["event_id"] for _, body in dispatch.sent] == [c.event_id]  # A's second waits for its first
    behind = put_backs(outbox)
    assert [event_id for event_id, _ in behind] == [a1.event_id, a2.event_id, b.event_id]
    assert [at for _, at in behind] == sorted(at for _, at in behind) and len({at for _, at in behind}) == 3


def test_a_marker_put_back_goes_behind_the_pending_ones_and_counts_its_rounds():
    from services.common.outbox import OutboxCollection

    database = MemoryDatabase()
    cases = MemoryCollection("cases", database)
    outbox = OutboxCollection(cases)
    stuck, good = _submitted("A"), _submitted("B")
    cases.insert_many([{"_id": "A", **outbox.fields("A", [stuck])}])
    cases.insert_many([{"_id": "B", **outbox.fields("B", [good])}])
    outbox.markers.docs[stuck.event_id]["at"] -= timedelta(minutes=10)
    outbox.markers.docs[good.event_id]["at"] -= timedelta(minutes=1)
    assert [e["event_id"] for _, e, _ in outbox.pending(timedelta(seconds=3), limit=1)] == [stuck.event_id]
    assert outbox.put_back(stuck.event_id, datetime.now(UTC) - timedelta(seconds=5)) == 1
    assert [e["event_id"] for _, e, _ in outbox.pending(timedelta(seconds=3), limit=1)] == [good.event_id]
    assert outbox.put_back(stuck.event_id, datetime.now(UTC)) == 2


class MemoryCollection:
    """Just enough of a pymongo collection for the outbox's own bookkeeping."""

    def __init__(self, name="cases", database=None):
        self.name, self.docs = name, {}
        self.database = database if database is not None else MemoryDatabase()
        self.database.collections[name] = self

    def insert_many(self, docs):
        for doc in docs:
            assert doc["_id"] not in self.docs
            self.docs[doc["_id"]] = dict(doc)

    def find(self, query):
        limit = query["at"]["$lt"]
        docs = sorted((d for d in self.docs.values() if d["at"] < limit), key=lambda d: d["at"])

        class Cursor(list):
            def sort(self, *args):
                return self

            def skip(self, n):
                return Cursor(self[n:])

            def limit(self, n):
                return self[:n]

        return Cursor(docs)

    def find_one(self, query, projection=None):
        return self.docs.get(query["_id"])

    def delete_one(self, query):
        self.docs.pop(query["_id"], None)

    def delete_many(self, query):
        if getattr(self, "fail_deletes", 0):
            self.fail_deletes -= 1
            raise AutoReconnect("store gone")
        key, values = next(iter(query.items()))
        if hasattr(self, "delete_batches"):
            self.delete_batches.append(list(values["$in"]))
        for doc_id in [i for i, d in self.docs.items() if d.get(key) in values["$in"]]:
            del self.docs[doc_id]

    def update_one(self, query, update):
        doc = self.docs[query["_id"]]
        for path in update.get("$unset", {}):
            field, key = path.split(".")
            doc[field].pop(key, None)

    def find_one_and_update(self, query, update, return_document=None):
        doc = self.docs.get(query["_id"])
        if doc is None:
            return None
        doc.update(update.get("$set", {}))
        for field, step in update.get("$inc", {}).items():
            doc[field] = doc.get(field, 0) + step
        return dict(doc)

    def update_many(self, query, update):
        for doc_id in query["_id"]["$in"]:
            self.docs[doc_id].update(update["$set"])


class MemoryDatabase:
    def __init__(self):
        self.collections = {}

    def __getitem__(self, name):
        return self.collections.get(name) or MemoryCollection(name, self)


def test_fields_hold_each_event_by_id_and_stage_a_marker_for_each():
    first, second = _submitted("A"), _submitted("B")
    box = outbox_module.OutboxCollection(MemoryCollection())
    before = datetime.now(UTC)
    fields = box.fields("doc-1", (e for e in [first, second]))
    assert fields == {
        "outbox": {first.event_id: first.model_dump(mode="json"), second.event_id: second.model_dump(mode="json")}
    }
    assert box.markers.name == "cases_outbox"
    assert set(box.markers.docs) == {first.event_id, second.event_id}
    marker = box.markers.docs[first.event_id]
    assert marker["doc_id"] == "doc-1" and before <= marker["at"] <= datetime.now(UTC)


def test_update_queues_events_on_an_existing_document():
    first, second = _submitted("A"), _submitted("B")
    box = outbox_module.OutboxCollection(MemoryCollection())
    update = box.update("doc-1", iter([first, second]))
    assert update == {
        "$set": {
            f"outbox.{first.event_id}": first.model_dump(mode="json"),
            f"outbox.{second.event_id}": second.model_dump(mode="json"),
        }
    }
    assert set(box.markers.docs) == {first.event_id, second.event_id}


def test_nothing_to_queue_stages_nothing():
    box = outbox_module.OutboxCollection(MemoryCollection())
    assert box.fields("doc-1", []) == {"outbox": {}}
    assert box.markers.docs == {}


def test_forget_drops_the_markers_of_a_write_that_did_not_happen():
    kept, lost = _submitted("A"), _submitted("B")
    box = outbox_module.OutboxCollection(MemoryCollection())
    box.fields("doc-1", [kept])
    box.update("doc-2", [lost])
    box.forget([lost])
    assert set(box.markers.docs) == {kept.event_id}


def test_stored_outbox_entries_parse_back_into_envelopes():
    event = _submitted()
    stored = outbox_module.OutboxCollection(MemoryCollection()).fields("doc-1", [event])["outbox"][event.event_id]
    assert Envelope.model_validate(stored) == event


def _aged(box, event_id, age):
    box.markers.docs[event_id]["at"] = datetime.now(UTC) - age


def test_pending_finds_events_through_their_markers_oldest_first():
    a1, a2, b1, fresh = _submitted("A"), _published(), _submitted("B"), _submitted("C")
    collection = MemoryCollection()
    box = outbox_module.OutboxCollection(collection)
    collection.docs["A"] = {"_id": "A", **box.fields("A", [a1, a2])}
    collection.docs["B"] = {"_id": "B", **box.fields("B", [b1])}
    collection.docs["C"] = {"_id": "C", **box.fields("C", [fresh])}
    _aged(box, b1.event_id, timedelta(minutes=2))
    _aged(box, a1.event_id, timedelta(minutes=1))
    _aged(box, a2.event_id, timedelta(seconds=30))
    assert [(doc_id, event) for doc_id, event, _ in box.pending(timedelta(seconds=3))] == [
        ("B", b1.model_dump(mode="json")),
        ("A", a1.model_dump(mode="json")),
        ("A", a2.model_dump(mode="json")),
    ]


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def _box_with_events(*events, clock=None):
    collection = MemoryCollection()
    box = outbox_module.OutboxCollection(collection, clock=clock or FakeClock())
    for event in events:
        collection.docs[event.event_id] = {"_id": event.event_id, **box.fields(event.event_id, [event])}
    box.markers.delete_batches = []
    return box


def test_mark_published_takes_the_event_out_at_once_and_batches_its_marker():
    a1, a2 = _submitted("A"), _published()
    collection = MemoryCollection()
    box = outbox_module.OutboxCollection(collection, clock=FakeClock())
    collection.docs["A"] = {"_id": "A", **box.fields("A", [a1, a2])}
    box.mark_published("A", a1.event_id)
    assert list(collection.docs["A"]["outbox"]) == [a2.event_id]
    assert set(box.markers.docs) == {a1.event_id, a2.event_id}  # waits for its batch
    box.flush()
    assert list(box.markers.docs) == [a2.event_id]


def test_a_published_marker_not_yet_deleted_is_never_published_again():
    event = _submitted("A")
    box = _box_with_events(event)
    box.mark_published(event.event_id, event.event_id)
    _aged(box, event.event_id, timedelta(minutes=1))
    assert box.pending(timedelta(seconds=3)) == []
    assert event.event_id in box.markers.docs  # not an orphan yet: the batch deletes it


def test_a_full_batch_is_deleted_in_one_command():
    events = [_submitted(f"C{n}") for n in range(outbox_module.FLUSH_SIZE)]
    box = _box_with_events(*events)
    for event in events[:-1]:
        box.mark_published(event.event_id, event.event_id)
    assert box.markers.delete_batches == []
    box.mark_published(events[-1].event_id, events[-1].event_id)
    assert box.markers.delete_batches == [[e.event_id for e in events]]
    assert box.markers.docs == {}


def test_a_batch_is_deleted_once_its_first_marker_waited_long_enough():
    clock = FakeClock()
    first, second, third = _submitted("A"), _submitted("B"), _submitted("C")
    box = _box_with_events(first, second, third, clock=clock)
    box.mark_published(first.event_id, first.event_id)
    clock.now += outbox_module.FLUSH_AFTER / 2
    box.mark_published(second.event_id, second.event_id)
    assert box.markers.delete_batches == []
    clock.now += outbox_module.FLUSH_AFTER / 2
    box.mark_published(third.event_id, third.event_id)
    assert box.markers.delete_batches == [[first.event_id, second.event_id, third.event_id]]


def test_markers_whose_delete_failed_go_with_the_next_flush():
    first, second = _submitted("A"), _submitted("B")
    box = _box_with_events(first, second)
    failing_delete = box.markers.delete_many

    def publish_meanwhile_then_fail(query):
        box.mark_published(second.event_id, second.event_id)  # another greenthread, during the delete
        box.markers.delete_many = failing_delete
        box.markers.fail_deletes = 1
        failing_delete(query)

    box.markers.delete_many = publish_meanwhile_then_fail
    box.mark_published(first.event_id, first.event_id)
    box.flush()
    assert set(box.markers.docs) == {first.event_id, second.event_id}
    box.flush()
    assert box.markers.docs == {}
    assert box.markers.delete_batches[-1] == [first.event_id, second.event_id]


def test_published_markers_left_by_a_dead_process_do_not_hide_the_events_pending_behind_them():
    published = [_submitted(f"P{n}") for n in range(150)]
    waiting = _submitted("W")
    box = _box_with_events(*published, waiting)
    for event in published:  # published, but their batch died with the process
        box.collection.update_one({"_id": event.event_id}, {"$unset": {f"outbox.{event.event_id}": ""}})
        _aged(box, event.event_id, timedelta(minutes=1))
    _aged(box, waiting.event_id, timedelta(seconds=30))
    assert box.pending(timedelta(seconds=3), limit=100) == [(waiting.event_id, waiting.model_dump(mode="json"), None)]


def test_flushing_nothing_sends_nothing():
    box = _box_with_events()
    box.flush()
    assert box.markers.delete_batches == []


def test_the_relay_deletes_published_markers_before_it_looks_for_pending_events():
    outbox = FakeOutbox()
    Publisher(FakeDispatch()).relay(outbox)
    assert outbox.calls[:2] == ["flush", "pending"]


def test_a_marker_without_its_event_is_dropped_only_once_no_write_can_still_be_in_flight():
    slow, orphan = _submitted("A"), _submitted("B")
    box = outbox_module.OutboxCollection(MemoryCollection())
    box.fields("A", [slow])  # markers written, documents never (or not yet) stored
    box.fields("B", [orphan])
    _aged(box, slow.event_id, timedelta(minutes=1))
    _aged(box, orphan.event_id, outbox_module.ORPHAN_AFTER + timedelta(seconds=1))
    assert box.pending(timedelta(seconds=3)) == []
    assert list(box.markers.docs) == [slow.event_id]


# --- bulk publishing (seeding) ----------------------------------------------------------------------


class ClearingOutbox(FakeOutbox):
    def __init__(self):
        super().__init__()
        self.cleared = []

    def clear(self, doc_ids):
        self.cleared.append(list(doc_ids))


def test_publish_all_dispatches_every_event_then_clears_in_one_write():
    events = [_published(), _published(), _published()]
    pending = [(f"item-{n}@1", e) for n, e in enumerate(events)]
    dispatch, outbox = FakeDispatch(), ClearingOutbox()
    Publisher(dispatch).publish_all(outbox, pending)
    assert dispatch.sent == [("catalog.item_published.v1", e.model_dump(mode="json")) for e in events]
    assert outbox.cleared == [["item-0@1", "item-1@1", "item-2@1"]]
    assert outbox.marked == []  # no write per event


def test_publish_all_of_nothing():
    dispatch, outbox = FakeDispatch(), ClearingOutbox()
    Publisher(dispatch).publish_all(outbox, [])
    assert dispatch.sent == []
    assert outbox.cleared in ([], [[]])


def test_a_failed_bulk_publish_clears_nothing():
    first, second, third = _published(), _published(), _published()
    pending = [("a@1", first), ("b@1", second), ("c@1", third)]
    dispatch, outbox = FakeDispatch(fail_on={second.event_id}), ClearingOutbox()
    with contextlib.suppress(ConnectionError):
        Publisher(dispatch).publish_all(outbox, pending)
    # Everything stays pending for the relay: duplicates are fine, losses are not.
    assert outbox.cleared == []
    assert outbox.marked == []


def test_outbox_clear_empties_the_outbox_of_exactly_those_documents():
    a, b, c = _published(), _published(), _published()
    collection = MemoryCollection("versions")
    box = outbox_module.OutboxCollection(collection)
    for doc_id, event in (("a@1", a), ("b@1", b), ("c@1", c)):
        collection.docs[doc_id] = {"_id": doc_id, **box.fields(doc_id, [event])}
    box.clear(["a@1", "b@1"])
    assert [collection.docs[d]["outbox"] == {} for d in ("a@1", "b@1", "c@1")] == [True, True, False]
    assert list(box.markers.docs) == [c.event_id]


def test_a_stopping_process_deletes_the_markers_it_still_holds():
    event = _submitted("A")
    box = _box_with_events(event)
    box.mark_published(event.event_id, event.event_id)
    store = SimpleNamespace(outbox=box, name="not an outbox")
    provider = Storage(SimpleNamespace)
    provider.store = store
    provider.stop()
    assert box.markers.docs == {}
    Storage(SimpleNamespace).stop()  # a process stopped before its store was built: nothing to do
