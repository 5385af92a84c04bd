"""Logins on the real server: a user is found by any of its login names through `user_logins`
(by _id); a registration that died before indexing its logins is repaired by the next attempt;
users stored before the index are indexed once."""

from __future__ import annotations

import pytest

from services.common.errors import Conflict
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
