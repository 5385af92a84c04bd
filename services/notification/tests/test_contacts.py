"""The per-process contact cache: one identity call per person and minute, failures not kept."""

import pytest

from contracts.notifications import Contact
from services.common.errors import NotFound
from services.notification.contacts import ContactCache


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Identity:
    def __init__(self) -> None:
        self.asked: list[str] = []
        self.phones = {"u-1": "13800138001", "u-2": "13800138002"}

    def contact(self, user_id: str) -> dict:
        self.asked.append(user_id)
        if user_id not in self.phones:
            raise NotFound("no such user")
        return {"user_id": user_id, "phone": self.phones[user_id], "email": None}


def ask(cache: ContactCache, identity: Identity, user_id: str) -> Contact:
    return cache.get(user_id, lambda: identity.contact(user_id))


def test_a_person_is_asked_for_once_within_the_max_age_and_again_after():
    clock, identity = Clock(), Identity()
    cache = ContactCache(clock=clock)  # the default: 60 s
    assert ask(cache, identity, "u-1").phone == "13800138001"
    clock.now += 59
    assert ask(cache, identity, "u-1").phone == "13800138001"
    assert identity.asked == ["u-1"]
    identity.phones["u-1"] = "13900139001"  # a change whose announcement this process missed
    clock.now += 1
    assert ask(cache, identity, "u-1").phone == "13900139001"
    assert identity.asked == ["u-1", "u-1"]


def test_people_are_kept_apart():
    identity = Identity()
    cache = ContactCache(clock=Clock())
    assert [ask(cache, identity, u).phone for u in ("u-1", "u-2", "u-1")] == [
        "13800138001",
        "13800138002",
        "13800138001",
    ]
    assert identity.asked == ["u-1", "u-2"]


def test_a_failed_lookup_is_not_kept():
    identity = Identity()
    cache = ContactCache(clock=Clock())
    with pytest.raises(NotFound):
        ask(cache, identity, "u-3")
    identity.phones["u-3"] = "13800138003"
    assert ask(cache, identity, "u-3").phone == "13800138003"
    assert identity.asked == ["u-3", "u-3"]


def test_the_least_recently_asked_go_first_when_full():
    identity = Identity()
    identity.phones |= {"u-3": "13800138003"}
    cache = ContactCache(size=2, clock=Clock())
    for user in ("u-1", "u-2", "u-1", "u-3", "u-1", "u-2"):
        ask(cache, identity, user)
    assert identity.asked == ["u-1", "u-2", "u-3", "u-2"]  # u-2 was the oldest when u-3 came


def test_an_announced_change_is_asked_for_at_once():
    clock, identity = Clock(), Identity()
    cache = ContactCache(clock=clock)  # the default: 60 s
    ask(cache, identity, "u-1")
    identity.phones["u-1"] = "13900139001"
    clock.now += 1
    cache.changed("u-1")
    clock.now += 1
    assert ask(cache, identity, "u-1").phone == "13900139001"
    assert ask(cache, identity, "u-1").phone == "13900139001"
    assert identity.asked == ["u-1", "u-1"]
    assert ask(cache, identity, "u-2").phone == "13800138002"  # others are kept as they were


def test_an_answer_that_raced_a_change_is_used_once_but_not_kept():
    clock, identity = Clock(), Identity()
    cache = ContactCache(clock=clock)  # the default: 60 s

    def answer_while_the_phone_changes() -> dict:
        old = identity.contact("u-1")
        identity.phones["u-1"] = "13900139001"
        cache.changed("u-1")  # the announcement arrives while the old answer is on its way
        return old

    assert cache.get("u-1", answer_while_the_phone_changes).phone == "13800138001"
    clock.now += 1
    assert ask(cache, identity, "u-1").phone == "13900139001"
    assert identity.asked == ["u-1", "u-1"]
