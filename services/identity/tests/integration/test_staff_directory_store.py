"""The staff directory on the real server: staff are listed once, narrowed and paged by username;
deadline warnings go to active reviewers only; a deactivation reaches the account and its entry;
staff created before the directory are listed once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from contracts.envelope import Envelope, new_event
from contracts.events import StaffChanged, StaffStatusChanged
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


def status_event(user_id: str, active: bool, at: datetime) -> Envelope:
    return new_event(StaffStatusChanged(user_id=user_id, active=active, changed_at=at), producer="test")


def change_status(store: IdentityStore, person: dict, active: bool, at: datetime) -> bool:
    """As identity does it: the account with its event, then the directory on hearing it."""
    stored = store.set_staff_active(store.get_user(person["_id"]), active, at, status_event(person["_id"], active, at))
    store.sync_directory(person["_id"])
    return stored


def test_deadline_warnings_go_to_the_active_reviewers_only(store):
    wang, li = clerk("wang", ["reviewer"]), clerk("li", ["reviewer"])
    for person in (wang, li, clerk("zhou", ["supervisor"])):
        store.insert_user(person, "username")
        store.list_staff_member(person)
    assert store.staff_with_role("620524MZ", "reviewer") == sorted([wang["_id"], li["_id"]])
    at = datetime.now(UTC)
    assert change_status(store, wang, False, at)
    assert store.get_user(wang["_id"])["active"] is False and not store.account_active(wang["_id"])
    assert store.users.find_one({"_id": wang["_id"]})["outbox"]  # its announcement, stored with it
    assert store.staff_with_role("620524MZ", "reviewer") == [li["_id"]]
    [entry] = store.staff_page({"active": False}, 0, 10)[0]
    assert entry["username"] == "wang" and entry["deactivated_at"] is not None
    assert change_status(store, wang, True, at + timedelta(seconds=1))
    assert store.staff_with_role("620524MZ", "reviewer") == sorted([wang["_id"], li["_id"]])
    assert store.account_active(wang["_id"]) and not store.account_active("nobody")


def test_of_two_changes_the_later_wins_whichever_arrives_last(store):
    wang = clerk("wang", ["admin"], None)
    store.insert_user(wang, "username")
    store.list_staff_member(wang)
    assert store.any_active_admin()
    later, earlier = datetime.now(UTC), datetime.now(UTC) - timedelta(seconds=5)
    assert change_status(store, wang, False, later)
    assert not change_status(store, wang, True, earlier)  # stored after, but made before
    assert store.get_user(wang["_id"])["active"] is False
    assert store.staff_page({}, 0, 10)[0][0]["active"] is False
    assert not store.any_active_admin()


def test_the_directory_follows_a_change_whose_entry_a_crash_left_out(store):
    wang = clerk("wang", ["reviewer"])
    store.insert_user(wang, "username")  # the process died before listing it
    change_status(store, wang, False, datetime.now(UTC))
    [entry] = store.staff_page({}, 0, 10)[0]
    assert entry["username"] == "wang" and entry["active"] is False


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


def test_the_directory_follows_a_new_name_roles_and_department(store):
    wang = clerk("wang", ["reviewer"])
    store.insert_user(wang, "username")
    store.list_staff_member(wang)
    changes = {"name": "王五", "roles": ["reviewer", "supervisor"], "department_code": "620524GA"}
    event = new_event(
        StaffChanged(user_id=wang["_id"], changed=sorted(changes), changed_at=datetime.now(UTC)), producer="test"
    )
    store.update_staff(store.get_user(wang["_id"]), changes, event)
    assert store.users.find_one({"_id": wang["_id"]})["outbox"]  # its announcement, stored with it
    store.sync_directory(wang["_id"])
    [entry] = store.staff_page({}, 0, 10)[0]
    assert (entry["name"], entry["roles"], entry["department_code"]) == ("王五", ["reviewer", "supervisor"], "620524GA")
    assert store.staff_with_role("620524MZ", "reviewer") == []
    assert store.staff_with_role("620524GA", "reviewer") == [wang["_id"]]


def test_a_copy_of_an_older_version_never_overwrites_a_newer_one(store):
    wang = clerk("wang", ["reviewer"])
    store.insert_user(wang, "username")
    store.list_staff_member(wang)
    store.staff.update_one({"_id": wang["_id"]}, {"$set": {"staff_version": 5, "name": "newer"}})
    store.sync_directory(wang["_id"])  # the account is at version 0
    assert store.staff_page({}, 0, 10)[0][0]["name"] == "newer"


def test_a_resync_copies_every_account_again(store):
    wang = clerk("wang", ["admin"], None)
    store.insert_user(wang, "username")
    store.list_staff_member(wang)
    store.users.update_one({"_id": wang["_id"]}, {"$set": {"active": False}, "$inc": {"staff_version": 1}})
    assert store.any_active_admin()  # the directory lags
    store.resync_directory()
    assert not store.any_active_admin()
    assert not store.is_active_admin(wang["_id"]) and not store.is_active_admin("nobody")


def test_a_change_is_stored_only_over_the_version_it_was_read_at(store):
    older = clerk("wang", ["reviewer"])
    del older["staff_version"]  # an account from before versions existed
    store.insert_user(older, "username")
    read = store.get_user(older["_id"])

    def event() -> Envelope:
        return new_event(StaffChanged(user_id=older["_id"], changed=["name"], changed_at=datetime.now(UTC)), "test")

    assert store.update_staff(read, {"name": "王五"}, event())
    assert store.get_user(older["_id"])["staff_version"] == 1
    assert not store.update_staff(read, {"name": "王六"}, event())  # read before the first change
    assert store.get_user(older["_id"])["name"] == "王五"
    assert store.update_staff(store.get_user(older["_id"]), {"name": "王六"}, event())


def test_an_audit_entry_reported_twice_is_stored_once(store):
    # The gateway's request delivered again after its reply was lost: the same id, one entry.
    entry = {"actor_id": "u-li", "actor_roles": ["reviewer"], "action": "GET /api/v1/cases/C-1", "status": 200}
    store.append_audit("a" * 32, {**entry, "at": datetime.now(UTC), "address": "10.0.0.1"})
    store.append_audit("a" * 32, {**entry, "at": datetime.now(UTC), "address": "10.0.0.1"})
    store.append_audit("b" * 32, {**entry, "at": datetime.now(UTC), "address": "10.0.0.1"})
    rows, total = store.audit_page(0, 10)
    assert total == 2 and len(rows) == 2
