"""The notification store's shared bookkeeping on the real document server."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import eventlet

from services.notification.storage import NotificationStore


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


def test_a_due_delivery_is_claimed_by_one_sender_only(mongo_client, db_prefix):
    store = NotificationStore(mongo_client[f"{db_prefix}_notification"])
    now = datetime.now(UTC)
    doc = {"_id": "n1", "recipient": "u-1", "channels": {"sms": {"status": "pending"}}}
    assert store.create(doc, ["sms"], now)
    assert not store.create(doc, ["sms"], now)  # the same event again: nothing new
    assert [e["_id"] for e in store.due(now, 10)] == ["n1:sms"]
    pool = eventlet.GreenPool(10)
    claims = list(pool.imap(lambda _: store.claim("n1:sms", now, timedelta(seconds=60)), range(10)))
    assert claims.count(True) == 1
    assert store.due(now, 10) == []  # leased
    assert [e["_id"] for e in store.due(now + timedelta(seconds=61), 10)] == ["n1:sms"]  # lease over
    store.finish("n1:sms")
    assert store.due(now + timedelta(hours=1), 10) == []
