"""The staff directory on the real server: staff are listed once, narrowed and paged by username;
deadline warnings go to active reviewers only; a deactivation reaches the account and its entry;
staff created before the directory are listed once."""

from __future__ import annotations

from datetime import UTC, datetime

from services.identity import accounts
from services.identity.storage import IdentityStore


def clerk(username: str, roles: list[str], department: str | None = "620524MZ") -> dict:
    return accounts.new_staff(username, "职员", "Staff-pass-2026", roles, department)


def test_staff_are_listed_once_narrowed_and_paged_by_username(store):
    people = [clerk("wang", ["reviewer"]), clerk("li", ["reviewer", "supervisor"]), clerk("zhao", ["admin"], None)]
    for person in people:
        store.insert_user(person, "username")
        store.list_staff_member(person)
        store.list_staff_member(person)  # a second time (a login) changes nothing
    rows, total = store.staff_page({}, 0, 2)
    assert ([r["username"] for r in rows], total) == (["li", "wang"], 3)
    rows, total = store.staff_page({}, 2, 2)
    assert [r["username"] for r in rows] == ["zhao"]
    rows, total = store.staff_page({"roles": "reviewer", "department_code": "620524MZ"}, 0, 10)
    assert ([r["username"] for r in rows], total) == (["li", "wang"], 2)
    assert "password_hash" not in rows[0]


def test_deadline_warnings_go_to_the_active_reviewers_only(store):
    wang, li = clerk("wang", ["reviewer"]), clerk("li", ["reviewer"])
    for person in (wang, li, clerk("zhou", ["supervisor"])):
        store.insert_user(person, "username")
        store.list_staff_member(person)
    assert store.staff_with_role("620524MZ", "reviewer") == sorted([wang["_id"], li["_id"]])
    at = datetime.now(UTC)
    entry = store.set_staff_active(wang, False, at)
    assert entry["active"] is False and entry["deactivated_at"] is not None
    assert store.get_user(wang["_id"])["active"] is False
    assert store.staff_with_role("620524MZ", "reviewer") == [li["_id"]]
    assert store.staff_page({"active": False}, 0, 10)[0][0]["username"] == "wang"
    entry = store.set_staff_active(store.get_user(wang["_id"]), True, at)
    assert entry["active"] is True and entry["deactivated_at"] is None
    assert store.staff_with_role("620524MZ", "reviewer") == sorted([wang["_id"], li["_id"]])


def test_staff_created_before_the_directory_are_listed_once(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_identity"]
    older = clerk("wang", ["reviewer"])
    del older["active"]  # an account from before deactivation existed
    db["users"].insert_one(older)
    db["users"].insert_one(
        {"_id": "c1", "account_type": "citizen", "login_key": "620524194005060136", "phone_key": "13800138000"}
    )
    store = IdentityStore(db)
    store.ensure_indexes()
    rows, total = store.staff_page({}, 0, 10)
    assert total == 1 and rows[0]["username"] == "wang" and rows[0]["active"] is True
