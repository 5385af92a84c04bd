from datetime import UTC, datetime, timedelta

import pytest

from services.identity import throttling
from services.identity.throttling import Failures, Policy

NOW = datetime(2026, 11, 26, 8, 0, tzinfo=UTC)
POLICY = Policy(account_limit=5, address_limit=20, window=timedelta(minutes=15))


# --- keys ---------------------------------------------------------------------------------------


def test_account_key_ignores_case_and_surrounding_spaces():
    assert throttling.account_key("620524194005060136") == "account:620524194005060136"
    assert throttling.account_key(" 62052419400506013x ") == throttling.account_key("62052419400506013X")
    assert throttling.account_key("Admin") == throttling.account_key("admin") == "account:ADMIN"


def test_account_and_address_keys_never_collide():
    assert throttling.account_key("10.0.0.1") != throttling.address_key("10.0.0.1")
    assert throttling.address_key("203.0.113.7") == "address:203.0.113.7"


def test_address_key_keeps_the_address_as_given():
    assert throttling.address_key("2001:db8::1") == "address:2001:db8::1"
    assert throttling.address_key("203.0.113.7") != throttling.address_key("203.0.113.8")


# --- retry_after --------------------------------------------------------------------------------


def test_no_failures_is_not_blocked():
    assert throttling.retry_after(None, 5, POLICY, NOW) is None


@pytest.mark.parametrize("count", [1, 4])
def test_below_the_limit_is_not_blocked(count):
    assert throttling.retry_after(Failures(count, NOW - timedelta(seconds=1)), 5, POLICY, NOW) is None


@pytest.mark.parametrize("count", [5, 6, 50])
def test_at_or_over_the_limit_blocks_until_the_window_closes(count):
    failures = Failures(count, NOW - timedelta(minutes=5))
    assert throttling.retry_after(failures, 5, POLICY, NOW) == 10 * 60


def test_retry_after_rounds_up_to_whole_seconds():
    failures = Failures(5, NOW - timedelta(minutes=15) + timedelta(milliseconds=1))
    assert throttling.retry_after(failures, 5, POLICY, NOW) == 1  # never 0: "Retry-After: 0" invites a retry storm
    failures = Failures(5, NOW - timedelta(minutes=14, seconds=58, milliseconds=500))
    assert throttling.retry_after(failures, 5, POLICY, NOW) == 2


def test_window_just_opened_blocks_for_the_whole_window():
    assert throttling.retry_after(Failures(5, NOW), 5, POLICY, NOW) == 900


@pytest.mark.parametrize("age", [timedelta(minutes=15), timedelta(minutes=15, seconds=1), timedelta(days=1)])
def test_a_closed_window_does_not_block(age):
    assert throttling.retry_after(Failures(99, NOW - age), 5, POLICY, NOW) is None


def test_the_limit_passed_is_the_one_applied():
    failures = Failures(6, NOW - timedelta(minutes=1))
    assert throttling.retry_after(failures, POLICY.address_limit, POLICY, NOW) is None
    assert throttling.retry_after(failures, POLICY.account_limit, POLICY, NOW) == 14 * 60


def test_the_window_of_the_policy_is_applied():
    short = Policy(window=timedelta(seconds=30))
    assert throttling.retry_after(Failures(5, NOW - timedelta(seconds=10)), 5, short, NOW) == 20
    assert throttling.retry_after(Failures(5, NOW - timedelta(seconds=30)), 5, short, NOW) is None


# --- policy -------------------------------------------------------------------------------------


def test_policy_defaults(monkeypatch):
    for name in (
        "YIWANG_LOGIN_ACCOUNT_LIMIT",
        "YIWANG_LOGIN_ADDRESS_LIMIT",
        "YIWANG_LOGIN_WINDOW_SECONDS",
        "YIWANG_REGISTRATION_ADDRESS_LIMIT",
    ):
        monkeypatch.delenv(name, raising=False)
    # An address is many people (a carrier's NAT, an office) or one client's test suite: the
    # account's allowance stops guessing, the address's only floods.
    expected = Policy(account_limit=5, address_limit=100, window=timedelta(minutes=15), registration_limit=300)
    assert Policy.from_env() == expected == Policy()


def test_policy_from_environment(monkeypatch):
    monkeypatch.setenv("YIWANG_LOGIN_ACCOUNT_LIMIT", "3")
    monkeypatch.setenv("YIWANG_LOGIN_ADDRESS_LIMIT", "6")
    monkeypatch.setenv("YIWANG_LOGIN_WINDOW_SECONDS", "60")
    assert Policy.from_env() == Policy(account_limit=3, address_limit=6, window=timedelta(seconds=60))
