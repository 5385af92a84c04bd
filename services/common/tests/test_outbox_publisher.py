import contextlib
from datetime import UTC, datetime, timedelta

from contracts.envelope import Envelope, new_event
from contracts.events import CaseSubmitted, ItemPublished
from services.common import outbox as outbox_module
from services.common.outbox import outbox_fields, outbox_update
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

    def pending(self, older_than, limit=100):
        self.pending_calls.append(older_than)
        return list(self._pending)

    def mark_published(self, doc_id, event_id):
        self.marked.append((doc_id, event_id))


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


def test_relay_leaves_fresh_entries_to_their_request_by_default():
    outbox = FakeOutbox()
    Publisher(FakeDispatch()).relay(outbox)
    assert outbox.pending_calls == [RELAY_GRACE]
    assert timedelta(0) < RELAY_GRACE
    Publisher(FakeDispatch()).relay(outbox, older_than=timedelta(0))
    assert outbox.pending_calls[-1] == timedelta(0)


def test_relay_goes_on_after_a_failed_event():
    a, b = _submitted("A"), _submitted("B")
    outbox = FakeOutbox([("A", a.model_dump(mode="json")), ("B", b.model_dump(mode="json"))])
    dispatch = FakeDispatch(fail_on={a.event_id})
    assert Publisher(dispatch).relay(outbox) == 1
    assert outbox.marked == [("B", b.event_id)]


def test_outbox_fields_hold_each_event_by_id_in_order():
    first, second = _submitted("A"), _submitted("B")
    before = datetime.now(UTC)
    fields = outbox_fields([first, second])
    assert fields["outbox_ids"] == [first.event_id, second.event_id]
    assert fields["outbox"] == {
        first.event_id: first.model_dump(mode="json"),
        second.event_id: second.model_dump(mode="json"),
    }
    assert before <= fields["outbox_at"] <= datetime.now(UTC)
    assert fields["outbox_at"].tzinfo is not None


def test_outbox_fields_accept_a_generator():
    event = _submitted()
    fields = outbox_fields(e for e in [event])
    assert fields["outbox_ids"] == [event.event_id]
    assert list(fields["outbox"]) == [event.event_id]


def test_outbox_update_queues_events_on_an_existing_document():
    first, second = _submitted("A"), _submitted("B")
    update = outbox_update(iter([first, second]))
    assert update["$push"] == {"outbox_ids": {"$each": [first.event_id, second.event_id]}}
    assert update["$set"][f"outbox.{first.event_id}"] == first.model_dump(mode="json")
    assert update["$set"][f"outbox.{second.event_id}"] == second.model_dump(mode="json")
    assert set(update["$set"]) == {f"outbox.{first.event_id}", f"outbox.{second.event_id}", "outbox_at"}


def test_stored_outbox_entries_parse_back_into_envelopes():
    event = _submitted()
    stored = outbox_fields([event])["outbox"][event.event_id]
    assert Envelope.model_validate(stored) == event


def test_outbox_collection_pending_flattens_documents():
    a1, a2, b1 = _submitted("A"), _published(), _submitted("B")
    docs = [
        {"_id": "A", "outbox": {a1.event_id: {"e": 1}, a2.event_id: {"e": 2}}},
        {"_id": "B", "outbox": {b1.event_id: {"e": 3}}},
        {"_id": "C"},
    ]

    class Cursor:
        def sort(self, *args):
            return self

        def limit(self, n):
            self.n = n
            return iter(docs)

    class Collection:
        def find(self, query, projection):
            self.query = query
            return Cursor()

        def update_one(self, query, update):
            self.updated = (query, update)

    collection = Collection()
    box = outbox_module.OutboxCollection(collection)
    assert box.pending(timedelta(seconds=3)) == [("A", {"e": 1}), ("A", {"e": 2}), ("B", {"e": 3})]
    assert collection.query["outbox_at"]["$lt"] < datetime.now(UTC) - timedelta(seconds=2)
    box.mark_published("A", a1.event_id)
    assert collection.updated == (
        {"_id": "A"},
        {"$pull": {"outbox_ids": a1.event_id}, "$unset": {f"outbox.{a1.event_id}": ""}},
    )


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


class RecordingCollection:
    def __init__(self):
        self.updates = []

    def update_many(self, query, update):
        self.updates.append((query, update))


def test_outbox_clear_empties_the_outbox_of_exactly_those_documents():
    collection = RecordingCollection()
    outbox_module.OutboxCollection(collection).clear(["a@1", "b@1"])
    assert collection.updates == [({"_id": {"$in": ["a@1", "b@1"]}}, {"$set": {"outbox": {}, "outbox_ids": []}})]
