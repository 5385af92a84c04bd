"""Who may call each public route: the reviewed rule per route, kept beside the code.

A test compares it with the gateway's route table (`gateway.routing.ROUTES`), so a new endpoint
without a rule here, or a route whose declared roles drift from its rule, fails the build; the
end-to-end suite then calls every route as every kind of caller and checks the answers.

Rules: "anyone"; "signed_in" (any valid token); or a set of roles, one of which is needed.
A token of an account whose password an admin set (until its holder chose one) opens only the
routes of BEFORE_PASSWORD_CHANGE, and those open to anyone.
"""

from __future__ import annotations

ANYONE, SIGNED_IN = "anyone", "signed_in"
ADMIN, APPLICANT, REVIEWER, SUPERVISOR = "admin", "applicant", "reviewer", "supervisor"

RULES: dict[tuple[str, str], str | frozenset[str]] = {
    ("GET", "/healthz"): ANYONE,
    ("GET", "/readyz"): ANYONE,
    ("GET", "/openapi.json"): ANYONE,
    ("POST", "/api/v1/auth/register"): ANYONE,
    ("POST", "/api/v1/auth/login"): ANYONE,
    ("POST", "/api/v1/auth/refresh"): ANYONE,  # the refresh token is the credential
    ("POST", "/api/v1/auth/logout"): SIGNED_IN,
    ("POST", "/api/v1/auth/password-reset/code"): ANYONE,  # a code goes only to the account's own phone
    ("POST", "/api/v1/auth/password-reset"): ANYONE,  # the texted code is the credential
    ("PUT", "/api/v1/me/password"): SIGNED_IN,
    ("GET", "/.well-known/jwks.json"): ANYONE,
    ("GET", "/api/v1/me"): SIGNED_IN,
    ("GET", "/api/v1/me/certificates"): frozenset({APPLICANT}),
    ("GET", "/api/v1/me/contact"): frozenset({APPLICANT}),
    ("PUT", "/api/v1/me/contact"): frozenset({APPLICANT}),
    ("POST", "/api/v1/me/contact/phone-code"): frozenset({APPLICANT}),
    ("POST", "/api/v1/me/verifications/real-name"): frozenset({APPLICANT}),
    ("POST", "/api/v1/me/verifications/face"): frozenset({APPLICANT}),
    ("POST", "/api/v1/admin/staff"): frozenset({ADMIN}),
    ("POST", "/api/v1/admin/staff/<username>/password"): frozenset({ADMIN}),
    ("GET", "/api/v1/admin/staff"): frozenset({ADMIN}),
    ("PUT", "/api/v1/admin/staff/<username>"): frozenset({ADMIN}),
    ("PUT", "/api/v1/admin/staff/<username>/status"): frozenset({ADMIN}),
    ("POST", "/api/v1/admin/signing-keys"): frozenset({ADMIN}),
    ("GET", "/api/v1/admin/audit"): frozenset({ADMIN}),
    ("GET", "/api/v1/catalog/departments"): ANYONE,
    ("GET", "/api/v1/catalog/items"): ANYONE,
    ("GET", "/api/v1/catalog/items/<item_code>"): ANYONE,
    ("GET", "/api/v1/catalog/items/<item_code>/versions"): ANYONE,
    ("GET", "/api/v1/catalog/items/<item_code>/versions/<int:version>"): ANYONE,
    ("GET", "/api/v1/catalog/answers"): ANYONE,
    ("POST", "/api/v1/catalog/items"): frozenset({ADMIN}),
    ("PUT", "/api/v1/catalog/items/<item_code>"): frozenset({ADMIN}),
    ("GET", "/api/v1/catalog/items/<item_code>/draft"): frozenset({ADMIN}),
    ("POST", "/api/v1/catalog/items/<item_code>/publish"): frozenset({ADMIN}),
    ("POST", "/api/v1/catalog/items/<item_code>/withdrawal"): frozenset({ADMIN}),
    ("POST", "/api/v1/cases"): frozenset({APPLICANT}),
    ("GET", "/api/v1/cases"): frozenset({APPLICANT}),
    # Applicants see their own cases, reviewers their department's, supervisors and admins all;
    # intake answers 404 for the rest.
    ("GET", "/api/v1/cases/<case_no>"): SIGNED_IN,
    ("POST", "/api/v1/documents"): frozenset({APPLICANT}),
    ("POST", "/api/v1/cases/<case_no>/supplements"): frozenset({APPLICANT}),
    ("POST", "/api/v1/cases/<case_no>/withdrawal"): frozenset({APPLICANT}),
    ("POST", "/api/v1/cases/<case_no>/evaluation"): frozenset({APPLICANT}),
    ("GET", "/api/v1/review/tasks"): frozenset({REVIEWER}),
    ("POST", "/api/v1/review/cases/<case_no>/decisions"): frozenset({REVIEWER}),
    ("GET", "/api/v1/supervision/summary"): frozenset({SUPERVISOR, ADMIN}),
    ("GET", "/api/v1/calendar/<int:year>"): ANYONE,
    ("PUT", "/api/v1/admin/calendar/<int:year>"): frozenset({ADMIN}),
    ("GET", "/api/v1/notifications"): SIGNED_IN,
    ("POST", "/api/v1/notifications/<notification_id>/read"): SIGNED_IN,
    ("GET", "/api/v1/me/notification-preferences"): SIGNED_IN,
    ("PUT", "/api/v1/me/notification-preferences"): SIGNED_IN,
}


BEFORE_PASSWORD_CHANGE = frozenset(
    {("GET", "/api/v1/me"), ("PUT", "/api/v1/me/password"), ("POST", "/api/v1/auth/logout")}
)


def expected(
    rule: str | frozenset[str], caller_roles: frozenset[str] | None, opens_before_password_change: bool = True
) -> int | None:
    """401 or 403 when the caller (None: no token) must be refused; None when it may call.
    `opens_before_password_change=False`: the caller's password was set by an admin and the route
    is not one of BEFORE_PASSWORD_CHANGE."""
    if rule == ANYONE:
        return None
    if caller_roles is None:
        return 401
    if not opens_before_password_change:
        return 403
    if rule == SIGNED_IN or caller_roles & rule:  # type: ignore[operator]
        return None
    return 403
