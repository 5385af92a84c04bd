"""Logins on the real server: a user is found by any of its login names through `user_logins`
(by _id); a registration that died before indexing its logins is repaired by the next attempt;
users stored before the index are indexed once; a change of phone moves the phone's login name;
a user's sessions are found by _id (a new password ends them); a password is set over the one read."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from contracts.envelope import new_event
from contracts.events import ContactChanged
from services.common.errors import Conflict
from services.common.stored_time import to_stored_precision
from services.identity import accounts
from services.identity.storage import IdentityStore


def user(user_id: str, login_key: str, phone: str) -> dict:
    return {"_id": user_id, "login_key": login_key, "phone_key": phone, "name": user_id}


def test_a_user_is_found_by_its_login_key_or_phone(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    store.insert_user(user("u2", "staff:li", "staff:u2"), "username")
    assert store.find_by_login(["620524194005060136", "staff:620524194005060136"], "x")["_id"] == "u1"
    assert store.find_by_login(["13800138000", "staff:13800138000"], "13800138000")["_id"] == "u1"
    assert store.find_by_login(["LI", "staff:li"], "li")["_id"] == "u2"
    assert store.find_by_login(["NOBODY", "staff:nobody"], "nobody") is None
    assert store.login_key_exists("staff:li") and not store.login_key_exists("staff:wang")
    # A staff account's phone placeholder carries its user id, which applicants see on their cases:
    # it is no login name (its guesses would lock the reviewer out).
    assert store.logins.find_one({"_id": "phone:staff:u2"}) is None
    assert store.find_by_login(["STAFF:U2", "staff:staff:u2"], "") is None


def test_a_taken_key_names_its_field_and_repairs_a_registration_that_died_half_way(store):
    store.users.insert_one(user("u1", "620524194005060136", "13800138000"))  # its logins never indexed
    assert store.find_by_login(["620524194005060136"], "x") is None
    with pytest.raises(Conflict) as taken:
        store.insert_user(user("u9", "620524194005060136", "13900139000"), "id_number")
    assert taken.value.details == [{"field": "id_number", "issue": "already registered"}]
    assert store.find_by_login(["620524194005060136"], "x")["_id"] == "u1"
    with pytest.raises(Conflict) as phone:
        store.insert_user(user("u9", "110101199003077777", "13800138000"), "id_number")
    assert phone.value.details == [{"field": "phone", "issue": "already registered"}]


def test_users_stored_before_the_index_are_indexed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_identity"]
    db.users.insert_one(user("old", "620524194005060136", "13800138000"))
    IdentityStore(db).ensure_indexes()
    assert IdentityStore(db).find_by_login([], "13800138000")["_id"] == "old"


def changed(user_id: str) -> object:
    return new_event(ContactChanged(user_id=user_id, changed=["phone"]), "identity")


def test_a_new_phone_logs_in_and_the_old_one_no_longer(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    event = changed("u1")
    notice = {"phone": "13800138000", "kind": "phone_changed"}
    store.change_contact(
        store.get_user("u1"), {"phone": "13911112222", "email": "li@example.cn"}, event, {event.event_id: notice}
    )
    # The notice to the old number is kept with the change until it went out, and never shown with the user.
    assert store.pending_notice("u1", event.event_id) == notice and "pending_notices" not in store.get_user("u1")
    store.forget_notice("u1", event.event_id)
    assert store.pending_notice("u1", event.event_id) is None
    assert store.find_by_login([], "13911112222")["_id"] == "u1"
    assert store.find_by_login([], "13800138000") is None
    stored = store.get_user("u1")
    assert (stored["phone"], stored["phone_key"], stored["email"]) == ("13911112222", "13911112222", "li@example.cn")
    assert [e["type"] for _, e, _ in store.user_outbox.pending(timedelta(0))] == ["identity.contact_changed.v1"]
    # The old number is free: someone else may register with it.
    store.insert_user(user("u2", "110101199003077777", "13800138000"), "id_number")
    assert store.find_by_login([], "13800138000")["_id"] == "u2"


def test_a_phone_another_account_holds_is_a_conflict_that_changes_nothing(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    store.insert_user(user("u2", "110101199003077777", "13911112222"), "id_number")
    with pytest.raises(Conflict) as taken:
        store.change_contact(store.get_user("u1"), {"phone": "13911112222"}, changed("u1"))
    assert taken.value.details == [{"field": "phone", "issue": "already registered"}]
    assert store.get_user("u1")["phone_key"] == "13800138000"
    assert store.find_by_login([], "13911112222")["_id"] == "u2"
    assert store.find_by_login([], "13800138000")["_id"] == "u1"
    assert store.user_outbox.pending(timedelta(0)) == []


def test_a_change_read_before_another_one_loses(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    before = store.get_user("u1")
    store.change_contact(before, {"phone": "13911112222"}, changed("u1"))
    with pytest.raises(Conflict) as lost:
        store.change_contact(before, {"phone": "13922223333"}, changed("u1"))
    assert lost.value.details == []  # not "phone already registered": nobody holds that number
    assert store.find_by_login([], "13911112222")["_id"] == "u1"
    assert store.find_by_login([], "13922223333") is None  # its claim logs nobody in


def test_two_accounts_racing_for_one_phone_leave_it_logging_into_the_winner(store, monkeypatch):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    store.insert_user(user("u2", "110101199003077777", "13811111111"), "id_number")
    u1, u2 = store.get_user("u1"), store.get_user("u2")
    store.change_contact(u1, {"phone": "13911112222"}, changed("u1"))  # u1 wins the number
    # u2 claimed the name before u1's write and writes its user after it (its claim lands late).
    store.logins.update_one({"_id": "phone:13911112222"}, {"$set": {"user_id": "u2"}})
    monkeypatch.setattr(store, "_claim_phone_login", lambda phone, user_id: None)
    with pytest.raises(Conflict) as taken:
        store.change_contact(u2, {"phone": "13911112222"}, changed("u2"))
    assert taken.value.details == [{"field": "phone", "issue": "already registered"}]
    assert store.logins.find_one({"_id": "phone:13911112222"})["user_id"] == "u1"
    assert store.find_by_login([], "13911112222")["_id"] == "u1"
    assert store.find_by_login([], "13811111111")["_id"] == "u2"


def test_a_winner_that_died_before_pointing_the_name_at_itself_is_found_by_its_phone(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    # Its user holds the new number, but the name still points at a rival that lost the race.
    store.logins.insert_one({"_id": "phone:13911112222", "user_id": "u2"})
    store.users.update_one({"_id": "u1"}, {"$set": {"phone": "13911112222", "phone_key": "13911112222"}})
    assert store.find_by_login([], "13911112222")["_id"] == "u1"
    assert store.logins.find_one({"_id": "phone:13911112222"})["user_id"] == "u1"  # repaired


def test_a_change_that_died_half_way_leaves_a_login_name_nobody_can_use_and_the_next_holder_takes(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    # The user moved to a new phone, but the process died before removing the old phone's name.
    store.logins.insert_one({"_id": "phone:13911112222", "user_id": "u1"})
    store.users.update_one({"_id": "u1"}, {"$set": {"phone": "13911112222", "phone_key": "13911112222"}})
    assert store.logins.find_one({"_id": "phone:13800138000"})["user_id"] == "u1"
    assert store.find_by_login([], "13800138000") is None  # the old number no longer logs in as u1
    store.insert_user(user("u2", "110101199003077777", "13922223333"), "id_number")
    store.change_contact(store.get_user("u2"), {"phone": "13800138000"}, changed("u2"))
    assert store.find_by_login([], "13800138000")["_id"] == "u2"


def test_a_users_sessions_are_found_by_id_and_old_ones_dropped_from_the_index(store):
    store.start_session("s-old", "u1")
    store.user_sessions.update_one({"_id": "u1"}, {"$set": {"ids.s-old": datetime(2020, 1, 1, tzinfo=UTC)}})
    store.start_session("s-1", "u1")
    store.start_session("s-2", "u1")
    store.start_session("s-9", "u2")
    since = datetime.now(UTC) - timedelta(days=30)
    found = store.sessions_of("u1", since)
    assert sorted(found) == ["s-1", "s-2"] and all(start.at > since for start in found.values())
    assert sorted(store.user_sessions.find_one({"_id": "u1"})["ids"]) == ["s-1", "s-2"]
    store.forget_sessions("u1", ["s-1"])
    assert list(store.sessions_of("u1", since)) == ["s-2"]
    assert store.sessions_of("nobody", since) == {}


def test_a_session_keeps_what_its_login_checked_and_the_kept_session_the_new_password(store):
    since = datetime.now(UTC) - timedelta(days=30)
    checked = accounts.checked_by_login({"password_hash": "$argon2id$old", "staff_version": 2})
    store.start_session("s-1", "u1", checked)
    store.start_session("s-2", "u1", checked)
    store.start_session("s-legacy", "u1")  # indexed before logins' checks were kept
    found = store.sessions_of("u1", since)
    assert (found["s-1"].password, found["s-1"].staff_version) == (checked["password"], 2)
    assert (found["s-legacy"].password, found["s-legacy"].staff_version) == (None, None)
    store.keep_checked("u1", "s-1", "$argon2id$new")
    found = store.sessions_of("u1", since)
    assert found["s-1"].password == accounts.password_fingerprint("$argon2id$new")
    assert found["s-1"].staff_version == 2 and found["s-2"].password == checked["password"]
    store.forget_sessions("u1", ["s-2"])
    assert "s-2" not in store.user_sessions.find_one({"_id": "u1"})["checked"]
    # A kept session forgotten meanwhile: what it checked is dropped at the next read.
    store.forget_sessions("u1", ["s-1"])
    store.keep_checked("u1", "s-1", "$argon2id$newer")
    assert list(store.sessions_of("u1", since)) == ["s-legacy"]
    assert store.user_sessions.find_one({"_id": "u1"})["checked"] == {}


def test_a_login_drops_the_index_entries_of_sessions_past_the_maximum_age(store):
    store.start_session("s-old", "u1")
    store.start_session("s-recent", "u1")
    store.user_sessions.update_one({"_id": "u1"}, {"$set": {"ids.s-old": datetime(2020, 1, 1, tzinfo=UTC)}})
    store.start_session("s-new", "u1", ended_before=datetime.now(UTC) - timedelta(days=30))
    assert sorted(store.user_sessions.find_one({"_id": "u1"})["ids"]) == ["s-new", "s-recent"]
    assert store.get_session("s-new")["user_id"] == "u1"


def test_sessions_started_before_the_index_are_indexed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_identity"]
    now = datetime.now(UTC)
    db["sessions"].insert_many(
        [
            {"_id": "s-live", "user_id": "u1", "created_at": now, "revoked_at": None},
            {"_id": "s-gone", "user_id": "u1", "created_at": now, "revoked_at": now},
        ]
    )
    store = IdentityStore(db)
    store.ensure_indexes()
    assert list(store.sessions_of("u1", now - timedelta(days=1))) == ["s-live"]


def test_a_login_is_still_valid_until_the_password_roles_or_state_change(store):
    store.insert_user({**user("u1", "620524194005060136", "13800138000"), "password_hash": "h-1"}, "id_number")
    read = store.get_user("u1")
    assert store.login_still_valid(read) and not store.login_still_valid({**read, "password_hash": "h-0"})
    store.users.update_one({"_id": "u1"}, {"$inc": {"staff_version": 1}})  # new roles, say
    assert not store.login_still_valid(read)
    read = store.get_user("u1")
    store.users.update_one({"_id": "u1"}, {"$set": {"active": False}})
    assert not store.login_still_valid(read)


def test_a_new_password_is_set_only_over_the_one_it_was_read_with(store):
    store.insert_user({**user("u1", "620524194005060136", "13800138000"), "password_hash": "h-1"}, "id_number")
    read = store.get_user("u1")
    event = new_event(ContactChanged(user_id="u1", changed=["email"]), producer="test")  # any user event
    store.set_password(read, "h-2", event, change_required=True)
    assert store.get_user("u1")["password_hash"] == "h-2"
    assert store.get_user("u1")["password_change_required"] is True
    with pytest.raises(Conflict):
        store.set_password(
            read, "h-3", new_event(ContactChanged(user_id="u1", changed=["email"]), producer="test"), False
        )
    assert store.get_user("u1")["password_hash"] == "h-2"
    store.set_password(
        store.get_user("u1"), "h-3", new_event(ContactChanged(user_id="u1", changed=["email"]), producer="test"), False
    )
    assert store.get_user("u1")["password_change_required"] is False


def test_recent_revocations_are_a_small_list_read_by_id_and_pruned(store):
    from contracts.events import SessionRevoked

    def revoke(session_id: str) -> bool:
        payload = SessionRevoked(session_id=session_id, user_id="u1", reason="logout", expires_at=datetime.now(UTC))
        return store.revoke_session(session_id, new_event(payload, producer="test"))

    for sid in ("s-1", "s-2"):
        store.start_session(sid, "u1")
    assert revoke("s-1") and not revoke("s-1")  # once
    store.recent_revocations.insert_one({"_id": "s-old", "revoked_at": datetime.now(UTC) - timedelta(hours=1)})
    since = datetime.now(UTC) - timedelta(minutes=15)
    assert [r["_id"] for r in store.revoked_since(since)] == ["s-1"]
    assert store.recent_revocations.find_one({"_id": "s-old"}) is None  # dropped as it was read
    assert store.get_session("s-1")["revoked_at"] is not None and store.get_session("s-2")["revoked_at"] is None


def test_a_retried_revocation_keeps_the_later_time_and_old_revocations_are_listed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_identity"]
    now = datetime.now(UTC)
    db["sessions"].insert_one({"_id": "s-before", "user_id": "u1", "created_at": now, "revoked_at": now})
    store = IdentityStore(db)
    store.ensure_indexes()  # revocations from before the list are put on it once
    assert [r["_id"] for r in store.revoked_since(now - timedelta(minutes=15))] == ["s-before"]
    earlier = now - timedelta(minutes=5)
    store.recent_revocations.update_one({"_id": "s-before"}, {"$set": {"revoked_at": earlier}})
    store.recent_revocations.update_one({"_id": "s-before"}, {"$max": {"revoked_at": now}}, upsert=True)
    store.recent_revocations.update_one({"_id": "s-before"}, {"$max": {"revoked_at": earlier}}, upsert=True)
    assert store.recent_revocations.find_one({"_id": "s-before"})["revoked_at"] == to_stored_precision(now)


def test_attempts_are_counted_in_a_window_and_one_can_be_taken_back(store):
    now, window = datetime.now(UTC), timedelta(minutes=15)
    first = store.record_failure("address:10.1.1.1", now, window)
    assert first.count == 1
    second = store.record_failure("address:10.1.1.1", now, window)
    assert second.count == 2
    store.take_back_failure("address:10.1.1.1", second)  # a right password: its count comes back
    assert store.failures(["address:10.1.1.1"])["address:10.1.1.1"].count == 1
    store.take_back_failure("address:10.1.1.1", first)
    assert store.failures(["address:10.1.1.1"]) == {}  # nothing counted: nothing kept of the address
    store.take_back_failure("address:10.1.1.1", first)  # never below nothing
    store.take_back_failure("address:10.9.9.9", first)  # a key never counted stays uncounted
    assert store.failures(["address:10.1.1.1", "address:10.9.9.9"]) == {}


def test_an_attempt_is_taken_back_only_from_the_window_it_was_counted_in(store):
    now, window = datetime.now(UTC), timedelta(minutes=15)
    right = store.record_failure("address:10.2.2.2", now, window)  # a login near the window's end
    # While its password is checked, the window closes and a failure opens the next one.
    failure = store.record_failure("address:10.2.2.2", now + window + timedelta(seconds=1), window)
    assert failure.count == 1
    store.take_back_failure("address:10.2.2.2", right)
    assert store.failures(["address:10.2.2.2"])["address:10.2.2.2"].count == 1  # the failure stays counted


def test_closed_windows_are_swept(store):
    now, window = datetime.now(UTC), timedelta(minutes=15)
    store.record_failure("address:10.3.3.3", now - window - timedelta(seconds=1), window)
    store.record_failure("address:10.4.4.4", now, window)
    assert store.sweep_login_failures(before=now - window) == 1
    assert list(store.failures(["address:10.3.3.3", "address:10.4.4.4"])) == ["address:10.4.4.4"]


def test_a_registration_is_refused_before_its_password_is_hashed_when_its_names_are_taken(store):
    store.insert_user(user("u1", "620524194005060136", "13800138000"), "id_number")
    with pytest.raises(Conflict) as key:
        store.refuse_registered("620524194005060136", "13900139000", "id_number")
    assert key.value.details == [{"field": "id_number", "issue": "already registered"}]
    with pytest.raises(Conflict) as phone:
        store.refuse_registered("110101199003077777", "13800138000", "id_number")
    assert phone.value.details == [{"field": "phone", "issue": "already registered"}]
    store.refuse_registered("110101199003077777", "13900139000", "id_number")  # free: no answer
    # A phone's login name left by a change that died half way does not hold the number.
    store.users.update_one({"_id": "u1"}, {"$set": {"phone_key": "13700137000"}})
    store.refuse_registered("110101199003077777", "13800138000", "id_number")
