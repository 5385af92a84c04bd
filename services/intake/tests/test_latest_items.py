"""The latest published versions an intake process keeps (no broker: a fake fetch and clock)."""

from __future__ import annotations

import pytest

from services.catalog.seed_data import seed_items
from services.common.errors import NotFound
from services.intake.latest_items import LatestItemCache

GUIDE = next(item for item in seed_items() if item["item_code"] == "62052400MZ-GF-0001")


def version(n: int) -> dict:
    return {**GUIDE, "version": n}


class Catalog:
    """Answers like catalog.get_item, and counts how often it was asked."""

    def __init__(self, *answers: dict | Exception) -> None:
        self.answers, self.asked = list(answers), 0

    def __call__(self) -> dict:
        self.asked += 1
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


CODE = GUIDE["item_code"]


def test_an_item_is_fetched_once_and_then_kept():
    cache, catalog = LatestItemCache(clock=Clock()), Catalog(version(1))
    assert cache.get(CODE, catalog).version == 1
    assert cache.get(CODE, catalog).version == 1
    assert catalog.asked == 1


def test_an_announced_newer_version_makes_the_kept_one_stale_at_once():
    cache, catalog = LatestItemCache(clock=Clock()), Catalog(version(1), version(2))
    cache.get(CODE, catalog)
    cache.announced(CODE, 2)
    assert cache.get(CODE, catalog).version == 2
    assert cache.get(CODE, catalog).version == 2
    assert catalog.asked == 2


def test_an_announcement_of_a_version_already_kept_changes_nothing():
    cache, catalog = LatestItemCache(clock=Clock()), Catalog(version(3))
    cache.get(CODE, catalog)
    cache.announced(CODE, 2)  # late, or redelivered
    cache.announced(CODE, 3)
    cache.get(CODE, catalog)
    assert catalog.asked == 1


def test_an_entry_is_fetched_again_once_it_is_old_in_case_an_announcement_was_missed():
    clock = Clock()
    cache, catalog = LatestItemCache(clock=clock), Catalog(version(1), version(2))  # the default: 60 s
    cache.get(CODE, catalog)
    clock.now += 59
    assert cache.get(CODE, catalog).version == 1
    clock.now += 1
    assert cache.get(CODE, catalog).version == 2
    assert catalog.asked == 2


def test_a_fetch_that_raced_a_publication_is_answered_but_not_kept():
    cache = LatestItemCache(clock=Clock())

    def fetch_while_version_2_is_published() -> dict:
        cache.announced(CODE, 2)  # the event arrives while the old answer is on its way
        return version(1)

    assert cache.get(CODE, fetch_while_version_2_is_published).version == 1
    catalog = Catalog(version(2))
    assert cache.get(CODE, catalog).version == 2
    assert catalog.asked == 1


def test_an_unknown_item_is_not_kept():
    cache, catalog = LatestItemCache(clock=Clock()), Catalog(NotFound("no published item"), version(1))
    with pytest.raises(NotFound):
        cache.get(CODE, catalog)
    assert cache.get(CODE, catalog).version == 1
    assert catalog.asked == 2


def test_the_least_recently_used_item_makes_room():
    cache = LatestItemCache(size=2, clock=Clock())
    a, b, c = (f"62052400MZ-GF-000{n}" for n in (7, 8, 9))
    catalogs = {code: Catalog({**version(1), "item_code": code}) for code in (a, b, c)}
    for code in (a, b, a, c, a, b):  # c pushes out b (a was used more recently)
        cache.get(code, catalogs[code])
    assert [catalogs[code].asked for code in (a, b, c)] == [1, 2, 1]


def test_a_slow_fetch_of_an_older_version_does_not_replace_a_newer_one_kept_meanwhile():
    cache = LatestItemCache(clock=Clock())

    def slow_fetch_overtaken() -> dict:
        cache.get(CODE, Catalog(version(2)))  # a concurrent submission fetched and kept version 2
        return version(1)

    assert cache.get(CODE, slow_fetch_overtaken).version == 1
    catalog = Catalog(version(3))
    assert cache.get(CODE, catalog).version == 2  # still kept: no announcement said it is stale
    assert catalog.asked == 0


def test_a_withdrawal_makes_the_kept_version_stale_and_the_next_submission_asks_catalog():
    cache, catalog = LatestItemCache(clock=Clock()), Catalog(version(1), NotFound("takes no applications"))
    cache.get(CODE, catalog)
    cache.withdrawn(CODE, 1)
    with pytest.raises(NotFound):
        cache.get(CODE, catalog)
    assert catalog.asked == 2


def test_an_answer_that_raced_a_withdrawal_is_not_kept_but_a_version_published_after_it_is():
    cache = LatestItemCache(clock=Clock())

    def fetch_while_withdrawn() -> dict:
        cache.withdrawn(CODE, 1)  # the withdrawal is announced while the old answer is on its way
        return version(1)

    assert cache.get(CODE, fetch_while_withdrawn).version == 1
    republished = Catalog(version(2))
    assert cache.get(CODE, republished).version == 2
    assert cache.get(CODE, republished).version == 2
    assert republished.asked == 1
