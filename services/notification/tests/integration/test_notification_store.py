"""The notification store's shared bookkeeping on the real document server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from unittest.mock import ANY

import eventlet
import pymongo

from services.notification.storage import CHOICES_KEPT, RATE_BLOCK, RATE_COUNTERS_KEPT, NotificationStore
from tests.support import MONGO_URI, logging_client


def test_the_rate_limit_holds_across_concurrent_senders_and_resets_each_second(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    second = datetime(2026, 11, 26, 2, 0, 7, tzinfo=UTC)
    pool = eventlet.GreenPool(20)
    granted = list(pool.imap(lambda _: store.take_rate_token("sms", second, 5), range(20)))
    assert granted.count(True) == 5
    assert store.take_rate_token("email", second, 5)  # another channel, its own budget
    assert store.take_rate_token("sms", second + timedelta(seconds=1), 5)  # the next second
    # A minute later the same slot comes round again, fresh.
    later = list(pool.imap(lambda _: store.take_rate_token("sms", second + timedelta(minutes=1), 5), range(8)))
    assert later.count(True) == 5


def test_a_send_is_counted_in_one_write_and_past_counters_are_swept(db_prefix):
    client, log = logging_client()
    store = NotificationStore(client[f"{db_prefix}_notification"])
    start = datetime(2026, 11, 26, 2, 0, 7, tzinfo=UTC)
    store.rates.insert_one({"_id": "sms:07", "second": int(start.timestamp()) - 3600, "n": 3})  # older layout
    assert store.take_rate_token("sms", start, 5)  # the first send of a minute sweeps, then counts
    log.clear()
    for offset in range(1, 4):
        assert store.take_rate_token("sms", start + timedelta(seconds=offset), 5)
    assert log.names == ["findAndModify"] * 3
    assert store.rates.count_documents({}) == 4  # the older layout's counter is gone
    later = start + timedelta(seconds=RATE_COUNTERS_KEPT + 60)
    assert store.take_rate_token("sms", later, 5)
    assert [doc["_id"] for doc in store.rates.find({})] == [f"sms:{int(later.timestamp())}"]
    client.close()


def test_sends_alongside_each_other_share_one_count_per_block(db_prefix):
    client, log = logging_client()
    store = NotificationStore(client[f"{db_prefix}_notification"])
    second = datetime(2026, 11, 26, 2, 0, 7, tzinfo=UTC)
    store.take_rate_token("sms", second - timedelta(seconds=1), 50)  # the minute's sweep, out of the way
    log.clear()
    pool = eventlet.GreenPool(8)
    granted = list(pool.imap(lambda _: store.take_rate_token("sms", second, 50), range(8)))
    assert granted == [True] * 8
    assert log.names == ["findAndModify"] * (8 // RATE_BLOCK)  # not one per send
    assert store.rates.find_one({"_id": f"sms:{int(second.timestamp())}"})["n"] == 8
    client.close()


def notification(now: datetime, notification_id: str = "n1") -> dict:
    return {
        "_id": notification_id,
        "event_id": "e1",
        "case_no": "C-1",
        "traceparent": None,
        "recipient": "u-1",
        "created_at": now,
        "read_at": None,
        "content": {"sms": {"title": "", "body": "【一网通办】短信"}},
        "channels": {"sms": {"status": "pending", "attempts": 0}},
    }


def test_a_due_delivery_is_claimed_by_one_sender_only(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    assert [e["_id"] for e in store.create(notification(now), ["sms"], now)] == ["n1:sms"]
    assert store.create(notification(now), ["sms"], now) is None  # the same event again: nothing new
    assert [(e["_id"], e["recipient"]) for e in store.due(now, 10)] == [("n1:sms", "u-1")]  # kept in order per person
    pool = eventlet.GreenPool(10)
    claims = list(pool.imap(lambda _: store.claim("n1:sms", now, timedelta(seconds=60)), range(10)))
    assert [claim is not None for claim in claims].count(True) == 1
    assert store.due(now, 10) == []  # leased
    assert [e["_id"] for e in store.due(now + timedelta(seconds=61), 10)] == ["n1:sms"]  # lease over
    store.finish("n1:sms")
    assert store.due(now + timedelta(hours=1), 10) == []


def test_finished_entries_go_in_one_delete_and_a_failed_delete_is_not_raised(db_prefix):
    client, log = logging_client()
    store = NotificationStore(client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    for n in (1, 2, 3):
        assert store.create(notification(now, f"n{n}"), ["sms"], now) is not None
    log.clear()
    store.finish_all([])  # a run that read no receipt
    assert log.names == []
    store.finish_all(["n1:sms", "n3:sms", "n9:sms"])  # one already gone: nothing to say
    assert log.names == ["delete"]
    assert [e["_id"] for e in store.due(now, 10)] == ["n2:sms"]
    unreachable = NotificationStore(
        pymongo.MongoClient("mongodb://127.0.0.1:9", serverSelectionTimeoutMS=200)[f"{db_prefix}_notification"]
    )
    unreachable.finish_all(["n2:sms"])  # logged: the entry stays due and its next run repeats harmlessly


def test_a_channel_switched_off_leaves_a_choice_saved_meanwhile(db_prefix):
    # The contact-change handler read ["inbox", "sms", "email"], then the person saved ["inbox",
    # "email"]; the handler switches email off: the person's dropping sms stands.
    client, _ = logging_client()
    store = NotificationStore(client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    store.choose_channels("u-1", ["inbox", "sms", "email"], now)
    store.choose_channels("u-1", ["inbox", "email"], now)  # a PUT after the handler's read
    store.drop_channels("u-1", ["email"], now)
    assert store.channels_chosen("u-1") == ["inbox"]  # not ["inbox", "sms"] from the handler's copy
    assert store.channels_to_notify("u-1") == ["inbox"]
    store.drop_channels("u-2", ["email"], now)  # nobody chose: nothing stored
    assert store.channels_chosen("u-2") is None


def test_a_choice_of_channels_is_kept_for_notifying_a_few_seconds_and_dropped_when_changed(db_prefix):
    client, log = logging_client()
    clock = [1000.0]
    store = NotificationStore(client[f"{db_prefix}_notification"], clock=lambda: clock[0])
    now = datetime.now(UTC)
    assert store.channels_to_notify("u-1") is None  # nobody chose: read, and kept
    clock[0] += CHOICES_KEPT - 0.1
    log.clear()
    assert store.channels_to_notify("u-1") is None
    assert log.names == []  # a 秒批 case's second notification reads nothing
    store.choose_channels("u-1", ["inbox", "email"], now)  # through this process: dropped at once
    clock[0] += 0.1
    assert store.channels_to_notify("u-1") == ["inbox", "email"]
    other = NotificationStore(client[f"{db_prefix}_notification"])  # another process
    other.choose_channels("u-1", ["inbox"], now)
    assert store.channels_to_notify("u-1") == ["inbox", "email"]  # kept: followed within CHOICES_KEPT
    assert store.channels_chosen("u-1") == ["inbox"]  # what a person reads of their own is never kept
    clock[0] += CHOICES_KEPT
    assert store.channels_to_notify("u-1") == ["inbox"]


def test_a_choice_read_while_this_process_changes_it_is_used_once_but_not_kept(db_prefix):
    store = NotificationStore(pymongo.MongoClient(MONGO_URI)[f"{db_prefix}_notification"])
    read = store.channels_chosen

    def read_while_changed(user_id: str) -> list[str] | None:
        found = read(user_id)  # the old choice, on its way back ...
        store.choose_channels(user_id, ["inbox", "email"], datetime.now(UTC))  # ... as a new one lands
        return found

    store.channels_chosen = read_while_changed
    assert store.channels_to_notify("u-1") is None
    store.channels_chosen = read
    assert store.channels_to_notify("u-1") == ["inbox", "email"]


def test_a_new_entry_keeps_what_its_send_needs_and_a_redelivery_does_not(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    store.create(notification(now), ["sms"], now)
    [queued] = store.due(now, 10)
    assert queued["send"] == {
        "recipient": "u-1",
        "content": {"title": "", "body": "【一网通办】短信"},
        "traceparent": None,
        "case_no": "C-1",
        "event_id": "e1",
        "attempts": 0,
    }
    store.create(notification(now), ["sms"], now)  # a redelivery while it is queued: it stays as it is
    assert store.due(now, 10) == [queued]
    store.finish("n1:sms")
    # The event again after the delivery finished: queued again, but without what the send needs,
    # so its attempt reads the notification (and finds it delivered) instead of sending again.
    store.create(notification(now), ["sms"], now)
    [again] = store.due(now, 10)
    assert again["_id"] == "n1:sms" and "send" not in again


def test_a_redelivery_queues_no_channel_the_notification_was_not_stored_with(mongo_client, db_prefix):
    # The person chose email between the first delivery of the event and its redelivery: the
    # notification has no email content or status, so an email entry could never be sent.
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    store.create(notification(now), ["sms"], now)
    store.finish("n1:sms")
    store.create(notification(now), ["sms", "email"], now)
    assert [e["_id"] for e in store.due(now, 10)] == ["n1:sms"]
    # Nor leaves one it was stored with: dropped from the preferences since, it may still be pending.
    store.finish("n1:sms")
    store.create(notification(now), [], now)
    assert [e["_id"] for e in store.due(now, 10)] == ["n1:sms"]


def test_a_claim_counts_leases_until_the_attempt_reschedules(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now, lease = datetime.now(UTC), timedelta(seconds=60)
    store.create(notification(now), ["sms"], now)
    assert store.claim("n1:sms", now, lease).get("leases") is None  # as it was: never claimed
    later = now + lease
    assert store.claim("n1:sms", later, lease)["leases"] == 1  # the first attempt ended without a word
    store.reschedule("n1:sms", later, sent={"reference": "m-1"}, attempts=1)
    kept = store.queue.find_one({"_id": "n1:sms"})
    assert (kept["leases"], kept["send"]["attempts"], kept["sent"]) == (0, 1, {"reference": "m-1"})
    # Sent now: a run that read the entry before the send claims nothing (it would send it again).
    assert store.claim("n1:sms", later, lease) is None


def test_an_entry_queued_claimed_is_not_due_and_after_its_claim_ends_reads_the_notification(db_prefix):
    client, log = logging_client()
    store = NotificationStore(client[f"{db_prefix}_notification"])
    now, lease = datetime.now(UTC), timedelta(seconds=60)
    log.clear()
    [queued] = store.create(notification(now), ["sms"], now, claim_for=lease)
    assert "findAndModify" not in log.names  # claimed as it is queued: no claim of its own
    stored = store.queue.find_one({"_id": "n1:sms"})
    assert (stored["leases"], stored["send"], queued["leases"]) == (1, queued["send"], 1)
    assert store.due(now + lease - timedelta(seconds=1), 10) == []  # the handler sends it
    # Its sender died: the timer takes it when the claim ends, as an attempt that ended without a word.
    assert store.claim("n1:sms", now + lease, lease)["leases"] == 1
    client.close()


def test_an_entry_another_process_queued_first_is_not_returned_to_send(mongo_client, db_prefix):
    # A redelivery of the event, in another process, queued the entry unclaimed between this
    # process's insert of the notification and its insert of the entries: the timer sends it.
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    store.queue.insert_one({"_id": "n1:sms", "notification_id": "n1", "channel": "sms", "next_at": now})
    assert store.create(notification(now), ["sms"], now, claim_for=timedelta(seconds=60)) == []
    assert [e["_id"] for e in store.due(now, 10)] == ["n1:sms"]


def test_a_channels_status_only_moves_forward(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    store.create(notification(now), ["sms"], now)
    assert store.update_channel("n1", "sms", {"status": "delivered", "updated_at": now})
    assert not store.update_channel("n1", "sms", {"status": "sent", "reference": "m-1"})  # a late earlier step
    assert not store.update_channel("n1", "sms", {"status": "pending", "attempts": 3})
    assert not store.update_channel("n1", "sms", {"status": "delivered", "updated_at": now})  # a second receipt
    assert store.get("n1")["channels"]["sms"] == {"status": "delivered", "attempts": 0, "updated_at": ANY}
    store.create(notification(now, "n2"), ["sms"], now)
    for status in ("pending", "sent", "sent", "failed"):
        store.update_channel("n2", "sms", {"status": status})
        assert store.get("n2")["channels"]["sms"]["status"] == status


def test_the_inbox_lists_newest_first_pages_and_filters_unread(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    start = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    for n in range(5):
        doc = {"_id": f"n{n}", "recipient": "u-1", "created_at": start + timedelta(minutes=n), "read_at": None}
        assert store.create(doc, [], start) == []
    store.create({"_id": "x", "recipient": "u-2", "created_at": start, "read_at": None}, [], start)
    assert store.create({"_id": "n0", "recipient": "u-1", "created_at": start, "read_at": None}, [], start) is None

    rows, total = store.list_for("u-1", False, 0, 3)
    assert [r["_id"] for r in rows] == ["n4", "n3", "n2"] and total == 5
    assert [r["_id"] for r in store.list_for("u-1", False, 3, 3)[0]] == ["n1", "n0"]

    assert store.mark_read("u-1", "n3")
    assert not store.mark_read("u-2", "n3")  # someone else's: as if it did not exist
    rows, total = store.list_for("u-1", True, 0, 10)
    assert [r["_id"] for r in rows] == ["n4", "n2", "n1", "n0"] and total == 4
    assert store.list_for("u-2", False, 0, 10)[1] == 1


def test_notifications_stored_before_inboxes_existed_are_found(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    at = datetime(2026, 11, 1, tzinfo=UTC)
    store.notifications.insert_many(
        [
            {"_id": "old1", "recipient": "u-9", "created_at": at, "read_at": at},
            {"_id": "old2", "recipient": "u-9", "created_at": at + timedelta(hours=1), "read_at": None},
        ]
    )
    rows, total = store.list_for("u-9", False, 0, 10)
    assert [r["_id"] for r in rows] == ["old2", "old1"] and total == 2
    assert store.list_for("u-9", True, 0, 10)[1] == 1
    assert store.list_for("nobody", False, 0, 10) == ([], 0)  # and no scan next time: an empty inbox exists
    assert store.inbox.exists("nobody")


def test_a_persons_single_inbox_document_is_split_by_month_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_notification"]
    october, november = datetime(2026, 10, 5, tzinfo=UTC), datetime(2026, 11, 5, tzinfo=UTC)
    db.notifications.insert_many(
        [
            {"_id": "n-oct", "recipient": "u-7", "created_at": october, "read_at": october},
            {"_id": "n-nov", "recipient": "u-7", "created_at": november, "read_at": None},
        ]
    )
    items = {"n-oct": {"at": october, "read": True}, "n-nov": {"at": november, "read": False}}
    db.inboxes.insert_many([{"_id": "u-7", "items": items}, {"_id": "u-empty", "items": {}}])
    store = NotificationStore(db)
    store.ensure_indexes()

    rows, total = store.list_for("u-7", False, 0, 10)
    assert [r["_id"] for r in rows] == ["n-nov", "n-oct"] and total == 2
    assert [r["_id"] for r in store.list_for("u-7", True, 0, 10)[0]] == ["n-nov"]
    assert store.inbox.exists("u-empty") and db.inboxes.count_documents({}) == 0
    assert sorted(d["_id"] for d in db.inbox_months.find({})) == ["u-7/2026-10", "u-7/2026-11"]

    assert store.mark_read("u-7", "n-nov")
    assert store.list_for("u-7", True, 0, 10) == ([], 0)


def test_a_redelivery_in_the_next_month_is_indexed_where_the_notification_is(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    end_of_november = datetime(2026, 11, 30, 15, 59, tzinfo=UTC)  # 23:59 in China
    first = {"_id": "n1", "recipient": "u-1", "created_at": end_of_november, "read_at": None}
    assert store.create(first, [], end_of_november) == []
    again = {**first, "created_at": end_of_november + timedelta(minutes=2)}  # December in China
    assert store.create(again, [], again["created_at"]) is None
    rows, total = store.list_for("u-1", False, 0, 10)
    assert [r["_id"] for r in rows] == ["n1"] and total == 1
    assert store.mark_read("u-1", "n1")
    assert store.list_for("u-1", True, 0, 10) == ([], 0)


def test_a_reviewers_deadline_notices_of_a_day_are_one_digest(mongo_client, db_prefix):
    from datetime import date

    from services.notification import messages

    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)

    def file(case_no: str, at: datetime = now, deadline: date = date(2026, 11, 26)) -> bool:
        digest = messages.digest("case.overdue.v1", "r-1", at, at)
        return store.add_to_digest(digest, case_no, messages.digest_entry("高龄津贴申领", deadline))

    assert file("C-1") and file("C-2")
    assert not file("C-1")  # the event redelivered: nothing new
    assert file("C-2", deadline=date(2026, 11, 25))  # its deadline recomputed: updated
    assert (
        store.notifications.find_one({"_id": messages.digest("case.overdue.v1", "r-1", now, now)["_id"]})["cases"][
            "C-2"
        ]["deadline"]
        == "2026-11-25"
    )
    rows, total = store.list_for("r-1", False, 0, 20)
    assert total == 1 and [messages.view(row)["title"] for row in rows] == ["2026年11月27日：2 件办件已超期"]

    assert store.mark_read("r-1", rows[0]["_id"])
    assert store.list_for("r-1", True, 0, 20)[1] == 0
    assert file("C-3")  # a new case: unread again, still one notice
    rows, total = store.list_for("r-1", True, 0, 20)
    assert total == 1 and rows[0]["read_at"] is None and len(rows[0]["cases"]) == 3

    assert file("C-4", now + timedelta(days=1))  # the next day: a digest of its own
    assert store.list_for("r-1", False, 0, 20)[1] == 2
