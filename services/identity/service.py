"""Identity service entrypoints: accounts, sessions and tokens, assurance levels, certificates."""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import eventlet
import eventlet.semaphore
from nameko import config
from nameko.timer import timer
from pydantic import TypeAdapter

from contracts.common import Page, PageQuery, Principal
from contracts.envelope import Envelope, new_event
from contracts.events import (
    AssuranceRaised,
    CaseApproved,
    CertificateIssued,
    ContactChanged,
    PasswordChanged,
    SessionRevoked,
    StaffChanged,
    StaffStatusChanged,
)
from contracts.identity import (
    AssuranceView,
    AuditEntry,
    AuditRecord,
    ContactChange,
    FaceVerification,
    JwkSet,
    LoginAttempt,
    PasswordChange,
    PasswordReset,
    PasswordResetCodeRequest,
    PasswordResetCodeSent,
    PhoneCodeRequest,
    PhoneCodeSent,
    RefreshRequest,
    Registration,
    StaffCreated,
    StaffCreation,
    StaffPasswordReset,
    StaffQuery,
    StaffStatusChange,
    StaffUpdate,
    StaffView,
    TokenPair,
)
from contracts.notifications import SecurityNotice, VerificationText
from services.common.china_time import CHINA
from services.common.consuming import consumes
from services.common.errors import (
    EXPECTED_ERRORS,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    Unauthenticated,
    Unavailable,
    ValidationFailed,
    password_change_first,
    validated,
)
from services.common.heap import FrozenStartupHeap
from services.common.metrics import Metrics
from services.common.mongo import Storage
from services.common.publishing import EventPublisher
from services.common.rpc import ServiceRpc, call, rpc
from services.common.stored_time import to_stored_precision
from services.common.telemetry import Tracing, annotate
from services.identity import accounts, certificates, phone_codes, throttling, tokens, verification
from services.identity.first_admin import first_admin_password
from services.identity.storage import IdentityStore

REGISTRATION = TypeAdapter(Registration)
log = logging.getLogger(__name__)
KEYS_LOOKED_AT = 5  # the newest signing keys a process may sign with (one that opens with its secret)

# Codes this process texts at once. Each waits for the provider (up to 6 s): a slow one must not
# hold every worker, which logins wait for too. Beyond it a request is refused at once (503), its
# code void and counted against nothing.
SENDING = eventlet.semaphore.Semaphore(int(os.environ.get("YIWANG_CODE_SENDS_AT_ONCE", "4")))


def run_in_background(fn: Callable[..., None], *args: Any) -> None:
    """Run after the entrypoint answers, in the current trace (tests replace it to run at once)."""
    context = contextvars.copy_context()
    eventlet.spawn_n(context.run, fn, *args)


NOTICE_SENT_WITHIN = timedelta(days=1)
REFRESH_TTL = timedelta(days=14)
# A session ends this long after its login, however often it was refreshed: a new password has to
# end only the sessions started within it (README, Identity and access).
SESSION_MAX_AGE = timedelta(days=30)


def changed_meanwhile() -> Conflict:
    return Conflict("the staff account changed since it was read; read it again and repeat the change")


DEACTIVATED = "this account has been deactivated; ask an admin"
# The same words for every refused reset, so that they tell nobody whether the account exists.
RESET_REFUSED = "not a valid code for this account: wrong, expired or used; ask for a new one"
SENSITIVE = ("payload",)  # never logged or traced: passwords, id numbers


class IdentityService:
    name = "identity"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    store: IdentityStore = Storage(IdentityStore)
    events = EventPublisher()
    notification = ServiceRpc("notification")  # texts the phone codes

    # --- accounts ---------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def register(
        self, payload: dict[str, Any], client_address: str | None = None, request_key: str | None = None
    ) -> dict[str, Any]:
        """A new applicant account. The gateway passes the caller's address: each may register so
        often (429 beyond), counted after validation and before anything is read or hashed, so
        neither hashing nor asking which id numbers are registered (409) can be repeated at will.
        Callers inside the system (seeding, tests) pass none and are not counted. `request_key`:
        the gateway's for this HTTP request, kept on the account; the same request delivered again
        (its reply lost as the broker went away) answers the account it made, not 409."""
        registration = validated(REGISTRATION, payload, tagged_by="account_type")
        accounts.refuse_invalid(registration)  # every 422 first: invalid input counts against nothing
        if client_address is not None:
            limits, now = throttling.Policy.from_env(), datetime.now(UTC)
            key = throttling.registration_key(client_address)
            self._count_attempts(
                {key: limits.registration_limit}, limits, now, "too many registrations from this address"
            )
        login_key, phone, field = accounts.registration_logins(registration)
        try:
            # Two reads before the password's hash (0.16 s of CPU): a registration repeated cannot
            # make identity hash for nothing. The insert still settles a race.
            self.store.refuse_registered(login_key, phone, field)
            doc = accounts.new_applicant(registration)
            self.store.insert_user(_made_by(doc, request_key), accounts.login_field(doc))
        except Conflict:
            earlier = self._made_by_this_request(login_key, request_key)
            if earlier is None:
                raise
            return accounts.registration_result(earlier).model_dump(mode="json")
        return accounts.registration_result(doc).model_dump(mode="json")

    def _made_by_this_request(self, login_key: str, request_key: str | None) -> dict[str, Any] | None:
        """The account holding this login if this very request made it: delivered again because its
        reply was lost as the broker went away (the gateway's key for it, kept on the account)."""
        earlier = self.store.find_by_login([login_key], "") if request_key is not None else None
        return earlier if earlier is not None and earlier.get("request_key") == request_key else None

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def create_staff(
        self, principal: dict[str, Any], payload: dict[str, Any], request_key: str | None = None
    ) -> dict[str, Any]:
        """A staff account; `request_key` as for `register` (the same request again answers the
        account it made, not 409)."""
        self._require_admin(principal)
        staff = validated(StaffCreation, payload)
        accounts.refuse_login_name_clash(staff.username)
        self._refuse_common(staff.password, "password")
        doc = accounts.new_staff(
            staff.username,
            staff.name,
            staff.password,
            list(staff.roles),
            staff.department_code,
            password_change_required=staff.password_change_required,
        )
        try:
            self.store.insert_user(_made_by(doc, request_key), "username")
        except Conflict:
            earlier = self._made_by_this_request(accounts.staff_login_key(staff.username), request_key)
            if earlier is None:
                raise
            doc = earlier
        self.store.list_staff_member(doc)  # again for a request delivered again: its first may have died
        return StaffCreated(
            user_id=doc["_id"],
            username=staff.username,
            name=staff.name,
            roles=staff.roles,
            department_code=staff.department_code,
            password_change_required=staff.password_change_required,
        ).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_user(self, user_id: str) -> dict[str, Any]:
        return accounts.user_view(self._user(user_id)).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def contact(self, user_id: str) -> dict[str, Any]:
        """Phone and email for notifications (internal: the gateway exposes no route to it)."""
        return accounts.contact(self._user(user_id)).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_contact(self, principal: dict[str, Any]) -> dict[str, Any]:
        """The account holder's own phone and email (`GET /api/v1/me/contact`)."""
        return accounts.contact_view(self._applicant(principal)).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def change_contact(self, principal: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """A new phone (also a login name) and/or email, confirmed with the current password;
        announced (without the values) so that no one keeps sending to the old ones."""
        user = self._applicant(principal)
        change = validated(ContactChange, payload)
        self._confirm_password(user, change.password, "password", "the password is not correct")
        changes = accounts.contact_changes(user, change)
        spent = None
        if "phone" in changes:
            if change.phone_code is None:
                raise phone_codes.code_required()
            spent = self._spend_code(
                "phone_change", user["_id"], str(changes["phone"]), change.phone_code, "phone_code"
            )
        if changes:
            event = new_event(ContactChanged(user_id=user["_id"], changed=sorted(changes)), producer=self.name)
            # The number the account leaves is told (`tell_the_old_phone`, on hearing the event): kept
            # with the change, so a process that stops right after it does not lose the notice.
            notices = {}
            if "phone" in changes and user.get("phone"):
                notices[event.event_id] = self._old_phone_notice(user, str(changes["phone"]), event.event_id)
            try:
                self.store.change_contact(user, changes, event, notices)
            except Conflict:
                if spent:  # the phone is taken, or the account changed meanwhile: the code works again
                    self.store.unuse_phone_challenge(*spent)
                raise
            self.events.publish(self.store.user_outbox, user["_id"], [event])
        return accounts.contact_view({**user, **changes}).model_dump(mode="json")

    @staticmethod
    def _old_phone_notice(user: dict[str, Any], new_phone: str, event_id: str) -> dict[str, Any]:
        notice = SecurityNotice(
            phone=user["phone"],
            kind="phone_changed",
            at=datetime.now(UTC),
            new_phone_masked=accounts.masked_phone(new_phone),
            reference=f"phone_changed:{user['_id']}:{event_id}",  # the provider sends it once
        )
        return notice.model_dump(mode="json")

    @consumes("identity", ContactChanged)
    def tell_the_old_phone(self, envelope: Envelope, changed: ContactChanged) -> None:
        """The number the account left hears of the change (no notification of the account reaches
        it any more), so a holder who did not make it knows. Kept with the change until it went out:
        a text that fails is retried, then dead-lettered with the notice still kept (a replay sends
        it); a redelivery after it went out finds nothing to send."""
        notice = self.store.pending_notice(changed.user_id, envelope.event_id)
        if notice is None:
            return
        # A notice replayed long after (from the dead-letter queue) might reach whoever holds the
        # number by then: past a day it is dropped, not sent.
        if datetime.now(UTC) - datetime.fromisoformat(notice["at"]) > NOTICE_SENT_WITHIN:
            log.warning("a notice to an old phone was too old to send", extra={"user_id": changed.user_id})
        else:
            with self._sending_slot():  # the workers logins need are not all held by a slow provider
                call(self.notification.send_security_notice, notice)
        self.store.forget_notice(changed.user_id, envelope.event_id)

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def send_phone_code(self, principal: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        """Text a one-time code to the phone an applicant wants as their new one
        (`POST /api/v1/me/contact/phone-code`); the change of phone then needs it."""
        user = self._applicant(principal)
        phone = validated(PhoneCodeRequest, payload).phone
        if phone == user.get("phone"):
            raise ValidationFailed(
                "this is already the account's phone", [{"field": "phone", "issue": "already this account's phone"}]
            )
        policy = phone_codes.Policy.from_env()
        challenge = self._text_code("phone_change", user["_id"], phone, policy)
        return PhoneCodeSent(
            phone=phone, expires_at=challenge["expires_at"], resend_after=int(policy.resend_interval.total_seconds())
        ).model_dump(mode="json")

    # --- passwords --------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def change_password(
        self, principal: dict[str, Any], payload: dict[str, Any], request_key: str | None = None
    ) -> None:
        """A new password confirmed with the current one (`PUT /api/v1/me/password`, any account);
        every other session of the account ends. `request_key`: the gateway's for this request,
        kept with the new password; the request delivered again (its reply lost as the broker went
        away) is done, where its current password, changed by the first, read as wrong."""
        who = validated(Principal, principal)
        user = self._user(who.user_id)
        change = validated(PasswordChange, payload)
        if request_key is not None and user.get("password_changed_by") == request_key:
            return
        self._confirm_password(user, change.current_password, "current_password", "the current password is not correct")
        if change.new_password == change.current_password:
            raise ValidationFailed(
                "the new password is the current one", [{"field": "new_password", "issue": "same as the current one"}]
            )
        self._refuse_common(change.new_password)
        self._set_password(user, change.new_password, "changed", keep_session=who.session_id, request_key=request_key)

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def send_password_reset_code(self, payload: dict[str, Any], client_address: str) -> dict[str, Any]:
        """For a forgotten password: text a code to the phone of the account the login name
        belongs to (`POST /api/v1/auth/password-reset/code`). The answer is the same, and as fast,
        for an unknown account, one without a phone (staff), one that asked too often and one whose
        text could not go out: the lookup and the text happen after it, so nobody learns from it
        who is registered. Each client address may ask so often (429 beyond)."""
        username = validated(PasswordResetCodeRequest, payload).username
        policy, limits, now = phone_codes.Policy.from_env(), throttling.Policy.from_env(), datetime.now(UTC)
        # Counted before anything else, in one atomic write: parallel requests get no more.
        key = throttling.reset_request_key(client_address)
        self._count_attempts({key: limits.address_limit}, limits, now, "too many reset codes asked from this address")
        run_in_background(self._text_reset_code, username, policy)
        return PasswordResetCodeSent(
            valid_minutes=policy.valid_minutes, resend_after=int(policy.resend_interval.total_seconds())
        ).model_dump(mode="json")

    def _text_reset_code(self, username: str, policy: phone_codes.Policy) -> None:
        try:
            user = self._by_login_name(username)
            if user is not None and user.get("phone"):
                self._text_code("password_reset", user["_id"], user["phone"], policy)
        except (RateLimited, Unavailable):
            pass  # asked too often, or too many texts at once: as silent as for anyone else
        except Exception:  # nobody waits for this answer: log it (masked) for operators
            log.exception("a password reset code was not sent")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def reset_password(self, payload: dict[str, Any], client_address: str) -> None:
        """A new password with the code texted to the account's phone
        (`POST /api/v1/auth/password-reset`); every session of the account ends, and failed
        logins are forgotten (a locked-out holder is let in again). Every refusal of the code reads
        the same, and counts against the client address as a failed login does."""
        reset = validated(PasswordReset, payload)
        limits, now = throttling.Policy.from_env(), datetime.now(UTC)
        address = throttling.address_key(client_address)
        self._refuse_if_throttled({address: limits.address_limit}, limits, now)
        self._refuse_common(reset.new_password)  # before the code is spent on it
        user = self._by_login_name(reset.username)
        counted = self._count_attempts({address: limits.address_limit}, limits, now)  # taken back if right
        try:
            if user is None or not user.get("phone"):
                raise phone_codes.rejected(RESET_REFUSED, "code")
            spent = self._spend_code("password_reset", user["_id"], user["phone"], reset.code, "code")
        except ValidationFailed:
            raise phone_codes.rejected(RESET_REFUSED, "code") from None
        self.store.take_back_failure(address, counted[address])  # the address counts wrong codes only
        try:
            self._set_password(user, reset.new_password, "reset", keep_session=None)
        except Conflict:  # the password changed meanwhile: the code works again
            self.store.unuse_phone_challenge(*spent)
            raise
        # Under every login name of the account: whichever the guesses were made with.
        for key in (throttling.user_key(user["_id"]), *map(throttling.account_key, (user["login_key"], user["phone"]))):
            self.store.clear_failures(key)

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def reset_staff_password(self, principal: dict[str, Any], username: str, payload: dict[str, Any]) -> None:
        """An admin sets a new password for a staff account (`POST /api/v1/admin/staff/{username}/
        password`): staff have no phone for a reset code. Every session of the account ends, its
        failed logins are forgotten, and the holder is told in their inbox."""
        self._require_admin(principal)
        reset = validated(StaffPasswordReset, payload)
        self._refuse_common(reset.new_password)
        user = self._staff_account(username)  # applicants reset with their phone
        self._set_password(user, reset.new_password, "reset_by_admin", keep_session=None)
        for key in (throttling.user_key(user["_id"]), throttling.account_key(username)):
            self.store.clear_failures(key)

    # --- the staff directory ----------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_staff(self, principal: dict[str, Any], query: dict[str, Any]) -> dict[str, Any]:
        """Staff accounts by username (`GET /api/v1/admin/staff`), optionally of one department,
        role or state."""
        self._require_admin(principal)
        wanted = validated(StaffQuery, query, "query")
        narrowed = {"department_code": wanted.department_code, "roles": wanted.role, "active": wanted.active}
        rows, total = self.store.staff_page(
            {k: v for k, v in narrowed.items() if v is not None},
            (wanted.page - 1) * wanted.page_size,
            wanted.page_size,
        )
        items = [accounts.staff_view(row) for row in rows]
        return Page[StaffView](items=items, total=total, page=wanted.page, page_size=wanted.page_size).model_dump(
            mode="json"
        )

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def set_staff_status(self, principal: dict[str, Any], username: str, payload: dict[str, Any]) -> dict[str, Any]:
        """Deactivate a staff account (someone who left: every session ends, it cannot log in and
        is told of no deadline), or let it in again (`PUT /api/v1/admin/staff/{username}/status`)."""
        self._require_admin(principal)
        change = validated(StaffStatusChange, payload)
        user = self._staff_account(username)
        if not change.active and user["_id"] == validated(Principal, principal).user_id:
            raise Conflict("you cannot deactivate your own account; ask another admin")
        self._set_active(user, change.active)
        return accounts.staff_view_of(self._user(user["_id"])).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def update_staff(
        self, principal: dict[str, Any], username: str, payload: dict[str, Any], expected_version: int | None = None
    ) -> dict[str, Any]:
        """A staff account's name, roles and department (`PUT /api/v1/admin/staff/{username}`); an
        admin does not take the admin role from themself (someone must remain to give it back).
        With `expected_version` (If-Match), an account changed since is a Conflict."""
        self._require_admin(principal)
        update = validated(StaffUpdate, payload)
        user = self._staff_account(username)
        if user["_id"] == validated(Principal, principal).user_id and "admin" not in update.roles:
            raise Conflict("you cannot take the admin role from yourself; ask another admin")
        if expected_version is not None and user.get("staff_version", 0) != expected_version:
            raise changed_meanwhile()
        changes = {k: v for k, v in update.model_dump().items() if user.get(k) != v}
        if changes:
            self._change_staff(user, changes)
        return accounts.staff_view_of(self._user(user["_id"]) if changes else user).model_dump(mode="json")

    @consumes("identity", StaffChanged)
    def on_staff_changed(self, envelope: Envelope, changed: StaffChanged) -> None:
        """The directory follows; new roles or a new department end the account's sessions (their
        tokens carry the old ones; a refresh would carry the new, but a token lives 15 minutes)."""
        self.store.sync_directory(changed.user_id)
        if {"roles", "department_code"} & set(changed.changed):
            # As for a new password: a login that read the account as it was ends too.
            user = self.store.get_user(changed.user_id)
            current = user and user.get("staff_version", 0)
            self._end_sessions(
                changed.user_id,
                changed.changed_at,
                keep=None,
                reason="roles or department changed",
                stale=lambda start: start.staff_version is not None and start.staff_version != current,
            )

    @consumes("identity", StaffStatusChanged)
    def on_staff_status_changed(self, envelope: Envelope, changed: StaffStatusChanged) -> None:
        """The directory follows; a deactivated account's sessions end, every one of them (a login
        racing the change ends its own: `login_still_valid`). Both may happen twice, harmlessly."""
        self.store.sync_directory(changed.user_id)
        if changed.active:
            return
        # While the account is inactive still, every session. Let in again since (before this was
        # heard), the sessions it had when deactivated end all the same; those started after stay.
        let_in_again = self.store.account_active(changed.user_id)
        started_before = changed.changed_at if let_in_again else None
        self._end_sessions(changed.user_id, started_before, keep=None, reason="account deactivated")

    @consumes("identity", PasswordChanged)
    def end_sessions_after_password_change(self, envelope: Envelope, changed: PasswordChanged) -> None:
        """End the sessions started before the change (but the one that made it). Driven by the
        event, so a process that dies after storing the password still has them ended; ending one
        twice changes nothing. A login racing the change is refused by `login` itself, if it reads the
        new password; one that read the old one checked a password no longer stored: it ends here,
        though its session started after `changed_at` (taken before the store's write)."""
        user = self.store.get_user(changed.user_id)
        current = user and accounts.password_fingerprint(user["password_hash"])
        self._end_sessions(
            changed.user_id,
            changed.changed_at,
            changed.kept_session_id,
            f"password {changed.how}",
            stale=lambda start: start.password is not None and start.password != current,
        )

    @rpc
    def reviewers_of(self, department_code: str) -> list[str]:
        """User ids of the department's reviewers (told about deadlines)."""
        return self.store.staff_with_role(department_code, "reviewer")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def applicant_profile(self, user_id: str) -> dict[str, Any]:
        now = datetime.now(UTC)
        held = sorted({c["type"] for c in self.store.certificates_of(user_id) if certificates.is_valid(c, now)})
        # Ages turn on China's date (a birthday begins at midnight in Beijing, 16:00 UTC the day before).
        today = now.astimezone(CHINA).date()
        return accounts.applicant_profile(self._user(user_id), today, certificates=held).model_dump(mode="json")

    @rpc
    @timer(interval=3600, eager=True)
    def ensure_admin(self) -> str:
        """Create the first admin if missing (make seed, first start): YIWANG_ADMIN_USERNAME [admin],
        the password given or generated once into the state directory (first_admin.py)."""
        username = os.environ.get("YIWANG_ADMIN_USERNAME", "admin")
        if not self.store.login_key_exists(accounts.staff_login_key(username)):
            password = first_admin_password()
            doc = accounts.new_staff(username, "系统管理员", password, ["admin"], None)
            # The start-up timer and `make seed` may race: whoever loses finds the admin there.
            with contextlib.suppress(Conflict):
                self.store.insert_user(doc, "username")
                self.store.list_staff_member(doc)
        else:
            self._restore_an_admin(username)
        return username

    @timer(interval=86400, eager=True)
    def warn_of_simulated_providers(self) -> None:
        """At start and daily: the local providers confirm whatever is well formed, so with them
        anyone can raise an account to real-name and real-person level (and meet the rules that
        ask for it). Fine for development; a deployment must plug in the real ones."""
        name = config.get("IDENTITY_PROVIDERS", "local")
        if name not in verification.PROVIDERS:
            known = sorted(verification.PROVIDERS)
            log.error("unknown IDENTITY_PROVIDERS %r (known: %s): identity checks answer 503", name, known)
        elif name == "local":
            log.warning(
                "identity checks are simulated (IDENTITY_PROVIDERS=local): real-name and face checks "
                "confirm any well-formed input; not for production"
            )

    @timer(interval=3600, eager=True)
    def sweep_phone_counts(self) -> None:
        """Forget the per-phone code counts and the expired challenges of past China days (they hold
        phone numbers), and closed login windows. Every process runs it: idempotent deletes."""
        now = datetime.now(UTC)
        today = phone_codes.china_day(now).isoformat()
        self.store.sweep_phone_counts(before_day=today)
        self.store.sweep_phone_challenges(before_day=today, now=now)
        # Login windows closed (they hold addresses and login names): the next failure opens anew.
        self.store.sweep_login_failures(before=now - throttling.Policy.from_env().window)

    # --- sessions ---------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def login(self, payload: dict[str, Any]) -> dict[str, Any]:
        attempt = validated(LoginAttempt, payload)
        username = attempt.credentials.username
        policy, now = throttling.Policy.from_env(), datetime.now(UTC)
        account, address = throttling.account_key(username), throttling.address_key(attempt.client_address)
        self._refuse_if_throttled({account: policy.account_limit, address: policy.address_limit}, policy, now)

        user = self._by_login_name(username)
        if user is not None:
            self._refuse_if_throttled({throttling.user_key(user["_id"]): policy.account_limit}, policy, now)
        # The guess is counted before the password is checked, in one atomic write per key:
        # reading the count and counting after a failure let every guess in flight at once through
        # (one per worker). A right password uncounts it below.
        # One account key, so parallel guesses cannot see two counts that disagree: the account's
        # (shared by its login names), or for a name of no account the name's (so both look alike).
        allowance = throttling.user_key(user["_id"]) if user else account
        counted = self._count_attempts({allowance: policy.account_limit, address: policy.address_limit}, policy, now)
        if not accounts.password_matches(user and user["password_hash"], attempt.credentials.password):
            raise Unauthenticated("wrong username or password")
        self.store.clear_failures(account)  # the right password: not a guess after all
        self.store.clear_failures(allowance)
        # The address counts failures only (many people log in from one office's address): a
        # right password takes its count back rather than clearing the others' failures.
        self.store.take_back_failure(address, counted[address])
        if not accounts.is_active(user):  # said only to whoever knows the password
            raise Unauthenticated(DEACTIVATED)
        if user["account_type"] == "staff":
            self.store.list_staff_member(user)
        session_id = uuid.uuid4().hex
        self.store.start_session(
            session_id, user["_id"], accounts.checked_by_login(user), ended_before=now - SESSION_MAX_AGE
        )
        # A new password or a deactivation may have been stored while the old state was being
        # checked: it did not see this session, so this login ends it itself.
        if not self.store.login_still_valid(user):
            self._revoke(session_id, user["_id"], "password changed or account deactivated during login")
            raise Unauthenticated("the account changed while logging in; log in again")
        return self._issue_tokens(user, session_id).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def refresh(self, payload: dict[str, Any]) -> dict[str, Any]:
        """A refresh token works once; presenting a spent one revokes its whole session."""
        request = validated(RefreshRequest, payload)
        token, spent_now = self.store.spend_refresh_token(tokens.refresh_digest(request.refresh_token))
        if token is None:
            raise Unauthenticated("unknown refresh token")
        if not spent_now:
            self._revoke(token["family"], token["user_id"], "refresh token reused")
            raise Unauthenticated("this refresh token was already used; the session has been ended")
        session = self.store.get_session(token["family"])
        now = datetime.now(UTC)
        if (
            session is None
            or session["revoked_at"] is not None
            or token["expires_at"] <= now
            or session["created_at"] <= now - SESSION_MAX_AGE
        ):
            raise Unauthenticated("the session has ended; log in again")
        user = self._user(token["user_id"])
        if not accounts.is_active(user):
            self._revoke(token["family"], user["_id"], "account deactivated")
            raise Unauthenticated(DEACTIVATED)
        return self._issue_tokens(user, token["family"]).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def logout(self, principal: dict[str, Any]) -> None:
        who = validated(Principal, principal)
        if who.session_id:
            self._revoke(who.session_id, who.user_id, "logout")

    @rpc
    def revoked_sessions(self) -> list[dict[str, Any]]:
        """Sessions revoked recently enough that some of their access tokens may still be unexpired."""
        since = datetime.now(UTC) - tokens.ACCESS_TOKEN_TTL
        return [
            {"session_id": s["_id"], "expires_at": (s["revoked_at"] + tokens.ACCESS_TOKEN_TTL).isoformat()}
            for s in self.store.revoked_since(since)
        ]

    # --- keys -------------------------------------------------------------------------------------
    @rpc
    def jwks(self) -> dict[str, Any]:
        self._signing_key()  # make sure one exists before anyone asks to verify
        in_use = tokens.keys_in_use(self.store.public_keys(), datetime.now(UTC))  # retired ones left out
        return JwkSet(keys=[key["public_jwk"] for key in in_use]).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def rotate_signing_key(self, principal: dict[str, Any]) -> dict[str, str]:
        """New tokens are signed with a new key; tokens signed with older ones stay valid for their
        lifetime (the old key leaves the key set RETIRE_AFTER later)."""
        self._require_admin(principal)
        key = tokens.new_signing_key()
        self.store.add_key(key)
        return {"kid": key["kid"]}

    # --- assurance --------------------------------------------------------------------------------
    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def verify_real_name(self, principal: dict[str, Any]) -> dict[str, Any]:
        user = self._applicant(principal)
        providers = self._providers()
        level = verification.real_name_level(user, providers.people, providers.businesses)
        return self._raise_to(user, level, "population_registry")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=SENSITIVE)
    def verify_face(self, principal: dict[str, Any], payload: dict[str, Any]) -> dict[str, Any]:
        user = self._applicant(principal)
        request = validated(FaceVerification, payload)
        level = verification.real_person_level(user, self._providers().faces, request.liveness_token)
        return self._raise_to(user, level, "face")

    # --- certificates -----------------------------------------------------------------------------
    @consumes("intake", CaseApproved)
    def on_case_approved(self, envelope: Envelope, approved: CaseApproved) -> None:
        annotate(case_no=approved.case_no, event_id=envelope.event_id)
        doc = certificates.new_certificate(approved, datetime.now(UTC))
        if doc is None:
            return
        event = new_event(
            CertificateIssued(
                certificate_id=doc["_id"],
                certificate_type=doc["type"],
                certificate_name=doc["name"],
                item_name=approved.item_name,
                case_no=approved.case_no,
                user_id=approved.applicant_id,
            ),
            producer=self.name,
        )
        if self.store.insert_certificate(doc, event):
            self.events.publish(self.store.certificate_outbox, doc["_id"], [event])

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def record_audit(self, entry: dict[str, Any]) -> None:
        """Append one staff action or administrative change (the gateway reports them), once."""
        record = validated(AuditRecord, entry)
        self.store.append_audit(record.entry_id or uuid.uuid4().hex, record.model_dump(exclude={"entry_id"}))

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_audit(self, principal: dict[str, Any], page: dict[str, Any]) -> dict[str, Any]:
        self._require_admin(principal)
        paging = validated(PageQuery, page, "query")
        rows, total = self.store.audit_page((paging.page - 1) * paging.page_size, paging.page_size)
        items = [AuditEntry.model_validate(row) for row in rows]
        return Page[AuditEntry](items=items, total=total, page=paging.page, page_size=paging.page_size).model_dump(
            mode="json"
        )

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def list_certificates(self, user_id: str) -> dict[str, Any]:
        return {"items": [certificates.view(c).model_dump(mode="json") for c in self.store.certificates_of(user_id)]}

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def check_certificates(self, user_id: str, certificate_ids: list[str]) -> list[dict[str, Any]]:
        found = self.store.certificates_by_id(certificate_ids)
        checks = certificates.check(certificate_ids, found, user_id, datetime.now(UTC))
        return [c.model_dump(mode="json") for c in checks]

    # --- plumbing ---------------------------------------------------------------------------------
    @rpc
    def ping(self) -> str:
        self.store.ping()
        return "pong"

    @timer(interval=2)
    def relay_outbox(self) -> None:
        for outbox in self.store.outboxes:
            self.events.relay(outbox)

    def _by_login_name(self, username: str) -> dict[str, Any] | None:
        """The account a login name (id number, credit code, phone, staff username) names."""
        return self.store.find_by_login(accounts.login_keys(username), accounts.phone_login(username))

    def _confirm_password(self, user: dict[str, Any], password: str, field: str, message: str) -> None:
        """ValidationFailed on `field` unless `password` is the account's. Wrong ones count against
        the account's login allowance (429 once it is used up): no guessing around it here."""
        policy, now = throttling.Policy.from_env(), datetime.now(UTC)
        allowance = throttling.user_key(user["_id"])
        self._refuse_if_throttled({allowance: policy.account_limit}, policy, now)
        self._count_attempts({allowance: policy.account_limit}, policy, now)  # before the check, as at login
        if not accounts.password_matches(user["password_hash"], password):
            raise ValidationFailed(message, [{"field": field, "issue": "not this account's password"}])
        self.store.clear_failures(allowance)  # the right password: not a guess after all

    def _count_attempts(
        self, limits: dict[str, int], policy: throttling.Policy, now: datetime, refusal: str = "too many failed logins"
    ) -> dict[str, throttling.Failures]:
        """Count an attempt (a guess, before it is checked) against each key, in one atomic write per
        key; RateLimited past any key's allowance, and then it counts against none. Returns the
        windows counted in, by key (to take an attempt back from the same window)."""
        counted: dict[str, throttling.Failures] = {}
        for key, limit in limits.items():
            window = self.store.record_failure(key, now, policy.window)
            # This attempt is the count-th: allowed while it is within the limit.
            wait = throttling.retry_after(window, limit + 1, policy, now)
            if wait:
                for earlier, its_window in counted.items():  # refused, not checked: no guess against the others
                    self.store.take_back_failure(earlier, its_window)
                raise RateLimited(f"{refusal}; try again later", retry_after=wait)
            counted[key] = window
        return counted

    def _refuse_if_throttled(self, limits: dict[str, int], policy: throttling.Policy, now: datetime) -> None:
        seen = self.store.failures(list(limits))
        wait = max((throttling.retry_after(seen.get(key), limit, policy, now) or 0) for key, limit in limits.items())
        if wait:
            raise RateLimited("too many failed logins; try again later", retry_after=wait)

    def _text_code(
        self, purpose: phone_codes.Purpose, user_id: str, phone: str, policy: phone_codes.Policy
    ) -> dict[str, Any]:
        """Keep a new challenge and text its code, or RateLimited (too soon, too many today). A
        code that does not go out is void and counts against nothing."""
        now = to_stored_precision(datetime.now(UTC))  # `sent_at` identifies the challenge in writes
        key = phone_codes.challenge_key(purpose, user_id)
        previous = self.store.phone_challenge(key)
        code = phone_codes.new_code()
        challenge = phone_codes.new_challenge(key, phone, code, previous, now, policy)
        with self._sending_slot():
            # The account's claim first: parallel requests send one code and count the phone once.
            if not self.store.keep_phone_challenge(challenge, previous):
                raise RateLimited(
                    "a code is being sent already", retry_after=int(policy.resend_interval.total_seconds())
                )
            if phone_codes.counts_per_phone(purpose):
                try:
                    phone_codes.refuse_flooding(self.store.count_code_to_phone(phone, challenge["day"]), now, policy)
                except RateLimited:  # certainly not sent: it counts against nothing, and an earlier code stands
                    self.store.put_back_phone_challenge(key, now, previous)
                    self.store.uncount_code_to_phone(phone, challenge["day"])
                    raise
            try:
                text = VerificationText(
                    phone=phone,
                    code=code,
                    purpose=purpose,
                    valid_minutes=policy.valid_minutes,
                    reference=f"{key}:{now.timestamp():.3f}",
                    not_after=now + phone_codes.SEND_WITHIN,
                )
                # A second beyond the deadline notification keeps; well within the gateway's wait.
                timeout = phone_codes.SEND_WITHIN.total_seconds() + 1
                call(self.notification.send_verification_code, text.model_dump(mode="json"), timeout=timeout)
            except Exception:
                # The provider may still send it late: the code is void, but it counts and the resend
                # interval holds (no one gets around the limits through a slow provider).
                self.store.void_phone_challenge(key, now)
                raise
            return challenge

    @contextlib.contextmanager
    def _sending_slot(self) -> Iterator[None]:
        """One of this process's SENDING slots for the duration, or Unavailable at once, before
        anything is claimed or counted (the code texted before stays as it was)."""
        if not SENDING.acquire(blocking=False):
            raise Unavailable("too many codes are being texted right now; try again in a moment")
        try:
            yield
        finally:
            SENDING.release()

    def _spend_code(
        self, purpose: phone_codes.Purpose, user_id: str, phone: str, code: str, field: str
    ) -> tuple[str, datetime]:
        """Spend the code texted for this purpose (the challenge's key and time, to give it back if
        the change it was spent on does not happen), or ValidationFailed on `field`."""
        key = phone_codes.challenge_key(purpose, user_id)
        counted = self.store.count_code_attempt(key)
        challenge = phone_codes.check(
            counted, key, phone, code, datetime.now(UTC), phone_codes.Policy.from_env(), field
        )
        if not self.store.use_phone_challenge(key, challenge["sent_at"]):
            raise phone_codes.rejected("the code was used already; ask for a new one", field)
        return key, challenge["sent_at"]

    @staticmethod
    def _refuse_common(password: str, field: str = "new_password") -> None:
        if accounts.is_common(password):
            raise ValidationFailed(
                "this password is too common", [{"field": field, "issue": "too common; choose another"}]
            )

    def _set_password(
        self, user: dict[str, Any], password: str, how: str, keep_session: str | None, request_key: str | None = None
    ) -> None:
        """Store the new password with its announcement; the account's other sessions end when
        identity hears it (`end_sessions_after_password_change`): those started before `changed_at`.
        A login that started its session after that moment but read the old hash (before the new
        one is written) would keep its session; hashing first (a tenth of a second of CPU) leaves
        that window only the store's write, not the hash's time too."""
        hashed = accounts.hash_password(password)
        changed = PasswordChanged(
            user_id=user["_id"],
            account_type=user["account_type"],
            how=how,  # type: ignore[arg-type]
            changed_at=datetime.now(UTC),
            kept_session_id=keep_session,
        )
        event = new_event(changed, producer=self.name)
        # A password an admin set is known to the admin: its holder must choose their own.
        self.store.set_password(user, hashed, event, change_required=how == "reset_by_admin", changed_by=request_key)
        if keep_session is not None:
            # Else a late hearing of an earlier change would end it: it checked the old password.
            self.store.keep_checked(user["_id"], keep_session, hashed)
        self.events.publish(self.store.user_outbox, user["_id"], [event])

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.store.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    def _staff_account(self, username: str) -> dict[str, Any]:
        user = self.store.find_by_login([accounts.staff_login_key(username)], "")
        if user is None or user["account_type"] != "staff":
            raise NotFound("no staff account with this username")
        return user

    def _applicant(self, principal: dict[str, Any]) -> dict[str, Any]:
        who = validated(Principal, principal)
        if "applicant" not in who.roles:
            raise Forbidden("only citizen and enterprise accounts are verified this way")
        return self._user(who.user_id)

    def _require_admin(self, principal: dict[str, Any]) -> None:
        # The gateway checks roles too; identity does not trust its callers blindly.
        who = validated(Principal, principal)
        if who.password_change_required:
            raise password_change_first()
        if "admin" not in who.roles:
            raise Forbidden("this needs the role admin")
        # A token lives on in a gateway for moments after its account was deactivated or lost the
        # admin role: here it administers nothing.
        if not self.store.is_active_admin(who.user_id):
            raise Forbidden("this account is no longer an active admin")

    def _providers(self) -> verification.Providers:
        """Instances of the configured providers (the same fields as `verification.Providers`)."""
        name = config.get("IDENTITY_PROVIDERS", "local")
        if name not in verification.PROVIDERS:  # a misconfiguration: said at start too
            raise Unavailable(f"identity checks are not configured (unknown IDENTITY_PROVIDERS {name!r})")
        return verification.Providers(*(cls() for cls in verification.PROVIDERS[name]))

    def _raise_to(self, user: dict[str, Any], level: int, method: str) -> dict[str, Any]:
        previous = user["assurance_level"]
        if level > previous:
            event = new_event(
                AssuranceRaised(user_id=user["_id"], previous_level=previous, assurance_level=level, method=method),
                producer=self.name,
            )
            if self.store.raise_assurance(user["_id"], previous, level, event):
                self.events.publish(self.store.user_outbox, user["_id"], [event])
        return AssuranceView(user_id=user["_id"], assurance_level=max(level, previous)).model_dump(mode="json")

    def _restore_an_admin(self, username: str) -> None:
        """Should no admin be left active (two admins deactivated each other, or took each other's
        role, at once), let the configured one in again, as an admin. Decided on a fresh copy of
        the directory, never on a lagging one."""
        self.store.resync_directory()
        if self.store.any_active_admin():
            return
        admin = self.store.find_by_login([accounts.staff_login_key(username)], "")
        if admin is None:
            return
        log.warning("no admin was active: %s is an active admin again", username)
        try:
            if "admin" not in admin["roles"]:
                self._change_staff(admin, {"roles": [*admin["roles"], "admin"]})
            if not accounts.is_active(admin):
                self._set_active(self.store.get_user(admin["_id"]) or admin, True)
        except Conflict:  # another process restored it meanwhile (a start-up timer, `make seed`)
            log.info("the admin was being restored by another process")

    def _change_staff(self, user: dict[str, Any], changes: dict[str, Any]) -> None:
        changed = StaffChanged(user_id=user["_id"], changed=sorted(changes), changed_at=datetime.now(UTC))
        event = new_event(changed, producer=self.name)
        if not self.store.update_staff(user, changes, event):
            raise changed_meanwhile()
        self.events.publish(self.store.user_outbox, user["_id"], [event])

    def _set_active(self, user: dict[str, Any], active: bool) -> None:
        """Store the staff account's new state with its announcement (`on_staff_status_changed`)."""
        changed = StaffStatusChanged(user_id=user["_id"], active=active, changed_at=datetime.now(UTC))
        event = new_event(changed, producer=self.name)
        if self.store.set_staff_active(user, active, changed.changed_at, event):
            self.events.publish(self.store.user_outbox, user["_id"], [event])

    def _end_sessions(
        self,
        user_id: str,
        started_before: datetime | None,
        keep: str | None,
        reason: str,
        stale: Callable[[accounts.SessionStart], bool] = lambda start: False,
    ) -> None:
        """End the user's sessions started before `started_before` (None: every one) or whose login
        checked what is `stale` now, but `keep`."""
        started = self.store.sessions_of(user_id, since=(started_before or datetime.now(UTC)) - SESSION_MAX_AGE)
        ended = [
            sid
            for sid, start in started.items()
            if sid != keep and (started_before is None or start.at < started_before or stale(start))
        ]
        for session_id in ended:
            self._revoke(session_id, user_id, reason)
        self.store.forget_sessions(user_id, ended)

    def _revoke(self, session_id: str, user_id: str, reason: str) -> None:
        event = new_event(
            SessionRevoked(
                session_id=session_id,
                user_id=user_id,
                reason=reason,
                expires_at=datetime.now(UTC) + tokens.ACCESS_TOKEN_TTL,
            ),
            producer=self.name,
        )
        if self.store.revoke_session(session_id, event):
            self.events.publish(self.store.session_outbox, session_id, [event])

    def _signing_key(self) -> dict[str, Any]:
        """The newest key in use that this process's secret opens, else a new one."""
        in_use = tokens.keys_to_sign_with(self.store.newest_keys(KEYS_LOOKED_AT), datetime.now(UTC))
        for place, key in enumerate(in_use):
            if tokens.signing_half(key) is not None:
                if place:
                    log.error("a newer signing key cannot be opened with this process's secret")
                return key
        if in_use:
            # Encrypted under another secret (YIWANG_CODE_SECRET or the state directory's file was
            # replaced): a new key signs from now on; tokens the old one signed stay verifiable.
            # (Processes holding different secrets each sign with their own key, not a new key per
            # login: a key the others superseded still signs for RETIRE_AFTER - ACCESS_TOKEN_TTL.)
            log.error("no signing key in use opens with this process's secret; a new key replaces them")
        key = tokens.new_signing_key()
        self.store.add_key(key)
        return key

    def _issue_tokens(self, user: dict[str, Any], session_id: str) -> TokenPair:
        access, expires_in = tokens.issue_access_token(self._signing_key(), user, session_id)
        refresh, digest = tokens.new_refresh_token()
        self.store.store_refresh_token(digest, user["_id"], session_id, datetime.now(UTC) + REFRESH_TTL)
        return TokenPair(
            access_token=access,
            refresh_token=refresh,
            expires_in=expires_in,
            password_change_required=user.get("password_change_required", False),
        )


def _made_by(doc: dict[str, Any], request_key: str | None) -> dict[str, Any]:
    """A new account with the key of the request that makes it, if the caller gave one."""
    return doc if request_key is None else {**doc, "request_key": request_key}
