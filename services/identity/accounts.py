"""Accounts: registration checks, password hashing, login, and the applicant profile rules read."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import UTC, date, datetime
from typing import Any, NamedTuple

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from contracts.identity import (
    PHONE_PATTERN,
    ApplicantProfile,
    CitizenRegistration,
    ContactChange,
    ContactView,
    EnterpriseRegistration,
    RegistrationResult,
    StaffView,
    UserView,
)
from contracts.notifications import Contact
from services.common.errors import ValidationFailed
from services.identity import idnumbers

_hasher = PasswordHasher()
# A real check against a breached-password list comes with the identity issue; these never pass.
COMMON_PASSWORDS = frozenset({"12345678", "123456789", "password", "password1", "qwertyui", "11111111", "88888888"})


def is_common(password: str) -> bool:
    return password.lower() in COMMON_PASSWORDS


class SessionStart(NamedTuple):
    """When a session started and what its login checked: the account's password (a fingerprint
    of its hash) and staff version. A change stored while a login ran ends the session by these,
    whatever the clocks say. None: indexed before these were kept; only the time counts then."""

    at: datetime
    password: str | None = None
    staff_version: int | None = None


def password_fingerprint(password_hash: str) -> str:
    """Tells hashes apart (each has its own salt) without keeping a second copy of one."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def checked_by_login(user: dict[str, Any]) -> dict[str, Any]:
    """What a login that read `user` checked, kept with its session (see `SessionStart`)."""
    return {"password": password_fingerprint(user["password_hash"]), "staff_version": user.get("staff_version", 0)}


def is_active(doc: dict[str, Any]) -> bool:
    """Whether the account (or a projection of it) is not deactivated; accounts from before
    deactivation existed have no such field."""
    return doc.get("active", True)


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def password_matches(stored_hash: str | None, password: str) -> bool:
    if not stored_hash:
        # Spend the same time as a real check so unknown users are not told apart by timing.
        _hasher.hash(password)
        return False
    try:
        return _hasher.verify(stored_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def _problems(registration: CitizenRegistration | EnterpriseRegistration) -> list[dict[str, str]]:
    problems = []
    if is_common(registration.password):
        problems.append({"field": "password", "issue": "too common; choose another password"})
    if isinstance(registration, CitizenRegistration):
        issue = idnumbers.id_number_problem(registration.id_number)
        if issue:
            problems.append({"field": "id_number", "issue": issue})
    else:
        issue = idnumbers.credit_code_problem(registration.credit_code)
        if issue:
            problems.append({"field": "credit_code", "issue": issue})
        issue = idnumbers.id_number_problem(registration.legal_person_id_number)
        if issue:
            problems.append({"field": "legal_person_id_number", "issue": issue})
    return problems


def registration_logins(registration: CitizenRegistration | EnterpriseRegistration) -> tuple[str, str, str]:
    """The login key a registration would take, its phone, and the public field of the key."""
    if isinstance(registration, CitizenRegistration):
        return registration.id_number, registration.phone, "id_number"
    return registration.credit_code, registration.phone, "credit_code"


def refuse_invalid(registration: CitizenRegistration | EnterpriseRegistration) -> None:
    """ValidationFailed listing every problem the contract's validation leaves to us (a common
    password, check digits)."""
    problems = _problems(registration)
    if problems:
        raise ValidationFailed("the registration is not valid", problems)


def new_applicant(registration: CitizenRegistration | EnterpriseRegistration) -> dict[str, Any]:
    """The user document for a registration, or ValidationFailed listing every problem."""
    refuse_invalid(registration)
    is_citizen = isinstance(registration, CitizenRegistration)
    key, _, _ = registration_logins(registration)
    doc: dict[str, Any] = {
        "_id": uuid.uuid4().hex,
        "account_type": registration.account_type,
        "name": registration.name,
        "login_key": key,
        "phone": registration.phone,
        "phone_key": registration.phone,
        "email": registration.email,
        "password_hash": hash_password(registration.password),
        "roles": ["applicant"],
        "assurance_level": 1,
        "department_code": None,
        "created_at": datetime.now(UTC),
    }
    if is_citizen:
        doc["id_number"] = registration.id_number
    else:
        doc["credit_code"] = registration.credit_code
        doc["legal_person_name"] = registration.legal_person_name
        doc["legal_person_id_number"] = registration.legal_person_id_number
    return doc


def new_staff(
    username: str,
    name: str,
    password: str,
    roles: list[str],
    department_code: str | None,
    password_change_required: bool = False,
) -> dict[str, Any]:
    user_id = uuid.uuid4().hex
    return {
        "_id": user_id,
        "account_type": "staff",
        "name": name,
        "login_key": staff_login_key(username),
        "phone": None,
        "phone_key": f"staff:{user_id}",
        "email": None,
        "password_hash": hash_password(password),
        "roles": roles,
        "assurance_level": 2,
        "department_code": department_code,
        "password_change_required": password_change_required,
        "active": True,  # false once deactivated (someone who left): no login, no deadline warnings
        "staff_version": 0,  # bumped by every change of the account (logins and copies compare it)
        "created_at": datetime.now(UTC),
    }


_MOBILE = re.compile(PHONE_PATTERN)


def phone_login(username: str) -> str:
    """The login name as a phone, or "" when it is none: a staff account's phone placeholder
    (`staff:<user_id>`, an id applicants see on their cases) is no login name."""
    return username if _MOBILE.fullmatch(username) else ""


def login_keys(username: str) -> list[str]:
    """Which stored keys a login name may match: id number, credit code, staff username (phones
    separately). Staff usernames are lower case, so `BOB` is bob too: a name's every spelling
    reaches the same account, and so the same failed-login allowance (were `BOB` no one, its
    429s would tell whether bob exists)."""
    return [username.upper(), staff_login_key(username)]


def staff_login_key(username: str) -> str:
    """Where a staff account is found by its username, in any spelling (`Bob` is bob)."""
    return f"staff:{username.lower()}"


def refuse_login_name_clash(username: str) -> None:
    """A staff username that reads as a credit code (upper-cased, as logins look one up) would
    send its holder's logins to the enterprise registering that code: 422."""
    if idnumbers.credit_code_problem(username.upper()) is None:
        raise ValidationFailed(
            "the username reads as a unified social credit code",
            [{"field": "username", "issue": "reads as a credit code, another login name; choose another"}],
        )


def login_field(doc: dict[str, Any]) -> str:
    """The public field a user's login key came from, for conflict details."""
    return "id_number" if "id_number" in doc else "credit_code" if "credit_code" in doc else "username"


def registration_result(doc: dict[str, Any]) -> RegistrationResult:
    return RegistrationResult(
        user_id=doc["_id"], account_type=doc["account_type"], name=doc["name"], assurance_level=doc["assurance_level"]
    )


def user_view(doc: dict[str, Any]) -> UserView:
    return UserView(
        user_id=doc["_id"],
        account_type=doc["account_type"],
        name=doc["name"],
        roles=doc["roles"],
        assurance_level=doc["assurance_level"],
        department_code=doc.get("department_code"),
        password_change_required=doc.get("password_change_required", False),
    )


def staff_entry(user: dict[str, Any]) -> dict[str, Any]:
    """A staff account's entry in the directory (never its password or phone)."""
    return {
        "username": user["login_key"].removeprefix("staff:"),
        "name": user["name"],
        "roles": user["roles"],
        "department_code": user.get("department_code"),
        "active": is_active(user),
        "created_at": user["created_at"],
        "deactivated_at": user.get("deactivated_at"),
        "status_changed_at": user.get("status_changed_at"),
        "staff_version": user.get("staff_version", 0),
    }


def staff_view_of(user: dict[str, Any]) -> StaffView:
    """A staff account as admins see it, from the account itself rather than the directory."""
    return staff_view({"_id": user["_id"], **staff_entry(user)})


def staff_view(entry: dict[str, Any]) -> StaffView:
    """A staff directory entry (storage's `staff_directory`) as admins see it."""
    fields = ("username", "name", "roles", "department_code", "active", "created_at", "deactivated_at")
    return StaffView(
        user_id=entry["_id"], version=entry.get("staff_version", 0), **{name: entry.get(name) for name in fields}
    )


def contact(doc: dict[str, Any]) -> Contact:
    return Contact(user_id=doc["_id"], phone=doc.get("phone"), email=doc.get("email"))


def masked_phone(phone: str) -> str:
    """139****2222: enough for the holder to recognise, too little for anyone else to use."""
    return f"{phone[:3]}****{phone[-4:]}"


def contact_view(doc: dict[str, Any]) -> ContactView:
    return ContactView(phone=doc.get("phone"), email=doc.get("email"))


def contact_changes(doc: dict[str, Any], change: ContactChange) -> dict[str, str | None]:
    """The fields that really change: {"phone": new} and/or {"email": new or None}."""
    changes: dict[str, str | None] = {}
    if change.phone is not None and change.phone != doc.get("phone"):
        changes["phone"] = change.phone
    if "email" in change.model_fields_set and change.email != doc.get("email"):
        changes["email"] = change.email
    return changes


def applicant_profile(doc: dict[str, Any], today: date, certificates: list[str]) -> ApplicantProfile:
    id_number = doc.get("id_number")
    return ApplicantProfile(
        user_id=doc["_id"],
        account_type=doc["account_type"],
        name=doc["name"],
        age=idnumbers.age_on(id_number, today) if id_number else None,
        gender=idnumbers.gender(id_number) if id_number else None,
        region_code=idnumbers.region_code(id_number) if id_number else doc.get("credit_code", "")[2:8] or None,
        assurance_level=doc["assurance_level"],
        certificates=certificates,
    )
