"""Phone codes on the real server: one challenge per account replaced only from the one it was
decided against, tries counted before they are compared (parallel guesses cannot exceed the
allowance), a code spent once or given back, a void code (refunded or not), expired challenges
swept, and each phone's daily count across accounts, swept when its day is past."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import eventlet
import pytest

from services.common.errors import ValidationFailed
from services.common.stored_time import to_stored_precision
from services.identity import phone_codes
from services.identity.phone_codes import Policy

PHONE, CODE, KEY = "13911112222", "480213", "phone_change:u1"


def now_ms() -> datetime:
    return to_stored_precision(datetime.now(UTC))


def test_a_challenge_is_replaced_only_from_the_one_it_was_decided_against(store):
    at = now_ms()
    first = phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy())
    assert store.keep_phone_challenge(first, None)
    assert not store.keep_phone_challenge(first, None)  # a parallel first request
    kept = store.phone_challenge(KEY)
    assert kept["sent_at"] == at and kept["code_hash"] == first["code_hash"]

    later = at + timedelta(minutes=2)
    second = phone_codes.new_challenge(KEY, PHONE, "111111", kept, later, Policy())
    assert store.keep_phone_challenge(second, kept)
    assert not store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, "2", kept, later, Policy()), kept)
    assert store.phone_challenge(KEY)["sent_today"] == 2


def test_parallel_guesses_are_all_counted_and_the_right_code_is_spent_once(store):
    at = now_ms()
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    pool = eventlet.GreenPool(8)
    counted = list(pool.imap(lambda _: store.count_code_attempt(KEY)["attempts"], range(8)))
    assert sorted(counted) == list(range(1, 9))  # each try saw its own count
    with pytest.raises(ValidationFailed, match="too many wrong codes"):
        phone_codes.check(store.count_code_attempt(KEY), KEY, PHONE, CODE, at, Policy())

    store.phone_challenges.delete_many({})
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    challenge = phone_codes.check(store.count_code_attempt(KEY), KEY, PHONE, CODE, at, Policy())
    assert store.use_phone_challenge(KEY, challenge["sent_at"])
    assert not store.use_phone_challenge(KEY, challenge["sent_at"])  # a parallel change with the same code
    assert store.count_code_attempt(KEY) is None  # a spent code takes no more tries


def test_a_code_certainly_not_sent_counts_for_nothing_and_the_one_before_stands(store):
    at = now_ms()
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    store.put_back_phone_challenge(KEY, at, None)  # none before it: gone
    assert store.phone_challenge(KEY) is None
    first = phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy())
    assert store.keep_phone_challenge(first, None)
    later = at + Policy().resend_interval
    second = phone_codes.new_challenge(KEY, "13900139000", "654321", first, later, Policy())
    assert store.keep_phone_challenge(second, first)
    store.put_back_phone_challenge(KEY, later, first)  # refused (a flooded phone): the first code works still
    assert phone_codes.check(store.count_code_attempt(KEY), KEY, PHONE, CODE, at, Policy())
    assert store.phone_challenge(KEY)["sent_today"] == 1


def test_a_code_that_may_have_gone_out_is_void_but_counts_and_the_interval_holds(store):
    at = now_ms()
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    store.void_phone_challenge(KEY, at)
    assert store.count_code_attempt(KEY) is None
    kept = store.phone_challenge(KEY)
    assert kept["sent_today"] == 1 and kept["next_send_at"] == at + Policy().resend_interval


def test_expired_challenges_of_past_days_are_swept(store):
    at = now_ms()
    store.keep_phone_challenge(
        phone_codes.new_challenge("phone_change:old", PHONE, CODE, None, at - timedelta(days=1), Policy()), None
    )
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    today = phone_codes.china_day(at).isoformat()
    assert store.sweep_phone_challenges(before_day=today, now=at) == 1
    assert store.phone_challenge(KEY) is not None and store.phone_challenge("phone_change:old") is None


def test_a_code_given_back_works_again(store):
    at = now_ms()
    store.keep_phone_challenge(phone_codes.new_challenge(KEY, PHONE, CODE, None, at, Policy()), None)
    assert store.use_phone_challenge(KEY, at)
    store.unuse_phone_challenge(KEY, at)
    assert phone_codes.check(store.count_code_attempt(KEY), KEY, PHONE, CODE, at, Policy())
    assert store.use_phone_challenge(KEY, at)


def test_a_phone_counts_its_codes_per_day_whoever_asks_and_past_days_are_swept(store):
    assert [store.count_code_to_phone(PHONE, "2027-03-01") for _ in range(3)] == [1, 2, 3]
    store.uncount_code_to_phone(PHONE, "2027-03-01")  # one that did not go out
    assert store.count_code_to_phone(PHONE, "2027-03-01") == 3
    assert store.count_code_to_phone("13700000000", "2027-03-01") == 1
    assert store.count_code_to_phone(PHONE, "2027-03-02") == 1  # a new day starts from zero
    assert store.sweep_phone_counts(before_day="2027-03-02") == 2
    assert store.count_code_to_phone(PHONE, "2027-03-02") == 2  # today's count stays


def test_first_counts_of_a_phone_at_once_are_all_counted(store):
    pool = eventlet.GreenPool(6)
    counts = list(pool.imap(lambda _: store.count_code_to_phone(PHONE, "2027-03-01"), range(6)))
    assert sorted(counts) == [1, 2, 3, 4, 5, 6]
