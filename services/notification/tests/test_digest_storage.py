"""Filing a case in a reviewer's digest when another process creates that digest at the same moment
(no store: the race is forced; on MongoDB two upserts of one new _id can both miss and one fail)."""

from datetime import UTC, date, datetime
from unittest.mock import MagicMock

from pymongo.errors import DuplicateKeyError

from services.notification import messages
from services.notification.storage import NotificationStore

NOW = datetime(2026, 11, 27, 1, 0, tzinfo=UTC)


def store_whose_upsert_loses_the_race(after_it: dict | None) -> NotificationStore:
    store = NotificationStore.__new__(NotificationStore)  # the two collections it uses, replaced
    store.notifications, store.inbox = MagicMock(), MagicMock()
    store.notifications.find_one_and_update.side_effect = [DuplicateKeyError("E11000"), after_it]
    store.notifications.find_one.return_value = {"_id": "d", "created_at": NOW, "read_at": None}
    return store


def file(store: NotificationStore) -> bool:
    digest = messages.digest("case.overdue.v1", "r-1", NOW, NOW)
    return store.add_to_digest(digest, "C-2", messages.digest_entry("高龄津贴申领", date(2026, 11, 26)))


def test_a_case_whose_upsert_lost_to_another_process_creating_the_digest_is_filed_all_the_same():
    store = store_whose_upsert_loses_the_race({"_id": "d", "created_at": NOW, "read_at": None})
    assert file(store)  # before: read as "filed already", and the case was never in the digest
    first, second = store.notifications.find_one_and_update.call_args_list
    assert first.kwargs["upsert"] is True and "upsert" not in second.kwargs  # the same update, on the digest
    assert first.args[:2] == second.args[:2]


def test_a_case_filed_already_is_not_filed_again_but_its_listing_is_made_again():
    store = store_whose_upsert_loses_the_race(None)  # the update matched nothing: filed as it is
    assert not file(store)
    store.inbox.put.assert_called_once()
