import hashlib
from datetime import UTC, datetime, timedelta

import pytest

from services.common.errors import RateLimited, ValidationFailed
from services.identity import phone_codes
from services.identity.phone_codes import Policy

USER, PHONE, CODE = "phone_change:u-1", "13911112222", "480213"
# 10:00 in China on 1 March 2027 (02:00 UTC)
NOON = datetime(2027, 3, 1, 2, 0, tzinfo=UTC)
POLICY = Policy()


def sent(at=NOON, previous=None, policy=POLICY):
    return phone_codes.new_challenge(USER, PHONE, CODE, previous, at, policy)


def test_a_challenge_key_names_purpose_and_account():
    assert phone_codes.challenge_key("password_reset", "u-1") == "password_reset:u-1"


def test_codes_are_six_digits_and_vary():
    codes = {phone_codes.new_code() for _ in range(200)}
    assert all(len(c) == 6 and c.isdigit() for c in codes)
    assert len(codes) > 150


def test_the_digest_is_keyed_with_the_code_secret(monkeypatch):
    kept = phone_codes.digest(USER, PHONE, CODE)
    # Without the secret, trying all million codes against a copy of the database finds nothing.
    unkeyed = {hashlib.sha256(f"{USER}\0{PHONE}\0{n:06d}".encode()).hexdigest() for n in range(10**6)}
    assert kept not in unkeyed
    monkeypatch.setenv("YIWANG_CODE_SECRET", "another-secret")
    assert phone_codes.digest(USER, PHONE, CODE) != kept


def test_a_challenge_keeps_a_digest_bound_to_account_and_phone():
    challenge = sent()
    assert CODE not in str(challenge)
    assert challenge["code_hash"] == phone_codes.digest(USER, PHONE, CODE)
    assert challenge["code_hash"] != phone_codes.digest("phone_change:u-2", PHONE, CODE)
    assert challenge["code_hash"] != phone_codes.digest("password_reset:u-1", PHONE, CODE)
    assert challenge["code_hash"] != phone_codes.digest(USER, "13700000000", CODE)
    assert challenge["expires_at"] == NOON + timedelta(minutes=5)
    assert challenge["next_send_at"] == NOON + timedelta(seconds=60)
    assert (challenge["day"], challenge["sent_today"], challenge["attempts"], challenge["used"]) == (
        "2027-03-01",
        1,
        0,
        False,
    )


def test_a_new_code_waits_for_the_resend_interval():
    first = sent()
    with pytest.raises(RateLimited) as info:
        sent(NOON + timedelta(seconds=20), first)
    assert info.value.retry_after == 40
    assert sent(NOON + timedelta(seconds=60), first)["sent_today"] == 2


def test_an_account_gets_its_daily_codes_and_then_waits_for_chinas_midnight():
    policy = Policy(daily_limit=3)
    challenge, at = None, NOON
    for _ in range(3):
        challenge = sent(at, challenge, policy)
        at += timedelta(minutes=1)
    with pytest.raises(RateLimited) as info:
        sent(at, challenge, policy)
    assert info.value.retry_after == 14 * 3600 - 3 * 60  # 10:03 to midnight in China
    # The next day in China (16:00 UTC is midnight there) starts from zero.
    assert sent(datetime(2027, 3, 1, 16, 0, tzinfo=UTC), challenge, policy)["sent_today"] == 1


def test_a_phone_takes_its_daily_codes_whoever_asks():
    phone_codes.refuse_flooding(10, NOON, POLICY)
    with pytest.raises(RateLimited):
        phone_codes.refuse_flooding(11, NOON, POLICY)


def counted(challenge, attempts=1):
    return {**challenge, "attempts": attempts}


def test_the_right_code_answers_its_challenge():
    challenge = sent()
    assert phone_codes.check(counted(challenge), USER, PHONE, CODE, NOON + timedelta(minutes=4), POLICY) == counted(
        challenge
    )


@pytest.mark.parametrize(
    ("challenge", "phone", "code", "at", "issue"),
    [
        (None, PHONE, CODE, NOON, "no code was sent to this phone"),
        ({"used": True}, PHONE, CODE, NOON, "no code was sent to this phone"),
        ({}, "13700000000", CODE, NOON, "no code was sent to this phone"),
        ({}, PHONE, CODE, NOON + timedelta(minutes=5), "expired"),
        ({"attempts": 6}, PHONE, CODE, NOON, "too many wrong codes"),
        ({"attempts": 2}, PHONE, "111111", NOON, "3 tries left"),
        ({"attempts": 5}, PHONE, "111111", NOON, "not the code that was sent"),
    ],
    ids=["none", "used", "other-phone", "expired", "worn-out", "wrong", "wrong-last"],
)
def test_a_code_that_does_not_answer_is_refused_on_phone_code(challenge, phone, code, at, issue):
    stored = None if challenge is None else {**counted(sent()), **challenge}
    with pytest.raises(ValidationFailed) as info:
        phone_codes.check(stored, USER, phone, code, at, POLICY)
    (detail,) = info.value.details
    assert detail["field"] == "phone_code" and issue in detail["issue"]


def test_the_last_of_the_tries_is_still_compared():
    assert phone_codes.check(counted(sent(), 5), USER, PHONE, CODE, NOON, POLICY)


def test_the_policy_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("YIWANG_PHONE_CODE_LIFETIME_SECONDS", "90")
    monkeypatch.setenv("YIWANG_PHONE_CODE_RESEND_SECONDS", "0")
    policy = Policy.from_env()
    assert policy.lifetime == timedelta(seconds=90) and policy.resend_interval == timedelta(0)
    assert policy.valid_minutes == 2
