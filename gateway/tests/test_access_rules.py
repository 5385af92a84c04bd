import pytest

import gateway.service  # noqa: F401 (declares every route)
from gateway.access_rules import ANYONE, BEFORE_PASSWORD_CHANGE, RULES, SIGNED_IN, expected
from gateway.routing import ROUTES


def test_every_route_has_a_rule_and_every_rule_a_route():
    routes = {(r.method, r.url) for r in ROUTES}
    assert routes - set(RULES) == set(), "routes without an access rule in gateway/access_rules.py"
    assert set(RULES) - routes == set(), "rules for routes that no longer exist"


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.url}")
def test_each_route_declares_what_its_rule_says(route):
    rule = RULES[(route.method, route.url)]
    if rule == ANYONE:
        assert not route.auth and not route.roles
    elif rule == SIGNED_IN:
        assert route.auth and not route.roles
    else:
        assert route.auth and frozenset(route.roles) == rule


@pytest.mark.parametrize(
    ("rule", "roles", "status"),
    [
        (ANYONE, None, None),
        (SIGNED_IN, None, 401),
        (SIGNED_IN, frozenset({"reviewer"}), None),
        (frozenset({"admin"}), None, 401),
        (frozenset({"admin"}), frozenset({"applicant"}), 403),
        (frozenset({"supervisor", "admin"}), frozenset({"admin"}), None),
    ],
)
def test_expected_answers(rule, roles, status):
    assert expected(rule, roles) == status


def test_a_token_whose_password_an_admin_set_is_refused_where_it_is_not_opened():
    assert expected(SIGNED_IN, frozenset({"reviewer"}), opens_before_password_change=False) == 403
    assert expected(frozenset({"reviewer"}), frozenset({"reviewer"}), opens_before_password_change=False) == 403
    assert expected(ANYONE, frozenset({"reviewer"}), opens_before_password_change=False) is None
    assert expected(SIGNED_IN, None, opens_before_password_change=False) == 401


@pytest.mark.parametrize("route", ROUTES, ids=lambda r: f"{r.method} {r.url}")
def test_each_route_opens_before_a_password_change_as_the_rules_say(route):
    assert route.before_password_change == ((route.method, route.url) in BEFORE_PASSWORD_CHANGE)
