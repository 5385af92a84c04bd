"""The relay's put-back against the real document server: failing events go behind the others."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.common.outbox import OutboxCollection
from services.common.publishing import Publisher
from services.common.tests.test_outbox_publisher import _submitted


def test_events_that_keep_failing_do_not_hold_back_the_ones_behind_them(mongo_client, db_prefix):
    cases = mongo_client[f"{db_prefix}_intake"]["cases"]
    outbox = OutboxCollection(cases)
    stuck = [_submitted(f"S{n}") for n in range(3)]
    good = _submitted("G")
    for event in [*stuck, good]:
        case_no = event.payload["case_no"]
        cases.insert_one({"_id": case_no, **outbox.fields(case_no, [event])})
    old = datetime.now(UTC) - timedelta(minutes=10)
    for n, event in enumerate(stuck):  # the oldest, filling a page of 3
        outbox.markers.update_one({"_id": event.event_id}, {"$set": {"at": old + timedelta(seconds=n)}})
    sent = []
    publisher = Publisher(lambda event_type, body: sent.append(body["event_id"]))

    def prepare(case_no, event):
        if case_no.startswith("S"):
            raise KeyError("never ready")

    pending = outbox.pending
    outbox.pending = lambda older_than, limit=100: pending(older_than, limit=3)  # a page as full as 100 are
    for _ in range(2):
        publisher.relay(outbox, older_than=timedelta(0), before_publish=prepare)
    assert sent == [good.event_id]
    assert outbox.markers.find_one({"_id": stuck[0].event_id})["failures"] >= 1
