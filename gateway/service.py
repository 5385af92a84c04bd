"""The gateway: the public HTTP API (../shared/api-v1.md), composed from RPC calls only."""

from __future__ import annotations

import contextvars
import functools
import logging
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import eventlet
from nameko.events import BROADCAST, event_handler
from nameko.timer import timer
from pydantic import BaseModel, TypeAdapter
from werkzeug.wrappers import Request

from contracts.cases import (
    CalendarView,
    CalendarYear,
    CaseCreated,
    CaseListQuery,
    CaseSummary,
    CaseView,
    DocumentStored,
    Evaluation,
    ReviewDecision,
    SubmitCase,
    SupervisionQuery,
    SupervisionSummary,
    Supplement,
    Task,
    TaskListQuery,
)
from contracts.catalog import (
    AnswerQuery,
    Answers,
    Department,
    Draft,
    GuideEdit,
    ItemQuery,
    ItemSummary,
    ItemWithdrawal,
    ItemWithdrawalRequest,
    PublishedItem,
    VersionSummary,
)
from contracts.common import Alive, Listing, Page, PageQuery, Principal, Ready
from contracts.envelope import parse_event
from contracts.events import SessionRevoked
from contracts.identity import (
    AssuranceView,
    AuditEntry,
    AuditRecord,
    Certificate,
    ContactChange,
    ContactView,
    FaceVerification,
    JwkSet,
    KeyRotated,
    LoginRequest,
    PasswordChange,
    PasswordReset,
    PasswordResetCodeRequest,
    PasswordResetCodeSent,
    PhoneCodeRequest,
    PhoneCodeSent,
    RefreshRequest,
    Registration,
    RegistrationResult,
    StaffCreated,
    StaffCreation,
    StaffPasswordReset,
    StaffQuery,
    StaffStatusChange,
    StaffUpdate,
    StaffView,
    TokenPair,
    UserView,
)
from contracts.notifications import NotificationListQuery, NotificationPreferences, NotificationView
from gateway import documents
from gateway.auth import Auth, client_address
from gateway.http import error_body, read_json
from gateway.openapi import openapi_document
from gateway.readiness import Readiness
from gateway.routing import HeaderDoc, api, close_after_answer, query_names
from gateway.shared_result import SharedPublicAnswers
from services.common.errors import Unavailable, ValidationFailed, validated
from services.common.heap import FrozenStartupHeap
from services.common.metrics import Metrics
from services.common.rpc import DEFAULT_TIMEOUT, ServiceRpc, call
from services.common.telemetry import Tracing, annotate, current_trace_id

REGISTRATION = TypeAdapter(Registration)
T = TypeVar("T", bound=BaseModel)
log = logging.getLogger(__name__)

SERVICES = ("identity", "catalog", "intake", "approval", "notification")
PING_TIMEOUT = 3.0  # seconds a service may take to answer /readyz's ping
AUDIT_READ_TIMEOUT = 2.0  # seconds a staff read waits for its audit entry to be stored


def page_query(request: Request) -> dict[str, Any]:
    return query_of(PageQuery, request).model_dump()


def query_of(model: type[T], request: Request) -> T:
    """The query parameters the model names, validated (the route has refused any others)."""
    return validated(model, {k: request.args[k] for k in query_names(model) if k in request.args}, "query")


def paged_if_asked(items: list[Any], request: Request) -> dict[str, Any]:
    """A list that api-v1 answers whole (`{"items"}`): whole, unless the client pages it the way
    every other list is paged (`?page=&page_size=`), which then answers as those do."""
    if not {"page", "page_size"} & set(request.args):
        return {"items": items}
    page = query_of(PageQuery, request)
    start = (page.page - 1) * page.page_size
    window = items[start : start + page.page_size]
    return {"items": window, "total": len(items), "page": page.page, "page_size": page.page_size}


IDEMPOTENCY_KEY = HeaderDoc(
    "Idempotency-Key",
    "The same key and body again answer the same case (200); the same key with another body is 409",
    {"type": "string", "minLength": 1, "maxLength": 200},
)
COMMAND_KEY = HeaderDoc(
    "Idempotency-Key",
    "The same key and body again, once the command took effect, answer the case as it is now (200) instead"
    " of 409; the same key with another body is 409. Kept per case and person",
    {"type": "string", "minLength": 1, "maxLength": 200},
)


def own_key() -> str:
    """A key of this HTTP request's, for a command whose service keeps it with what it changes: the
    service may be handed the request twice (redelivered when the broker went away before the reply)
    and must answer the second with what the first did, not 409 or "not correct"."""
    return f"gateway:{uuid.uuid4().hex}"


def command_key(request: Request) -> str:
    """The client's Idempotency-Key, or one of our own (`own_key`)."""
    return request.headers.get("Idempotency-Key") or own_key()


IF_MATCH = HeaderDoc(
    "If-Match",
    'The version the account was read at ("3"): an account changed since is 409; `*` or none: any',
    {"type": "string", "pattern": r'^\s*(\*|(W/)?"?[0-9]{1,18}"?)\s*$'},
)


def if_match_version(request: Request) -> int | None:
    """The version an edit was made from (`If-Match: "3"`, the `version` the client read), or None."""
    header = request.headers.get("If-Match")
    if header is None or header.strip() == "*":  # `*`: whatever version (RFC 9110)
        return None
    value = header.strip().removeprefix("W/").strip('"')
    if not (value.isascii() and value.isdigit() and len(value) <= 18):  # a version, not a 5000-digit int
        raise ValidationFailed("bad If-Match", [{"field": "header.If-Match", "issue": 'the version read, e.g. "3"'}])
    return int(value)


def as_flag(request: Request, name: str) -> bool:
    value = request.args.get(name, "false").lower()
    if value not in ("true", "false", "1", "0"):
        raise ValidationFailed("bad query parameter", [{"field": f"query.{name}", "issue": "use true or false"}])
    return value in ("true", "1")


@functools.cache
def _openapi() -> dict[str, Any]:
    """Built once per process, when first asked (every route is declared by then): building it
    took about 58 ms of CPU, and the route is anonymous. Not to be changed by its readers."""
    return openapi_document()


class Gateway:
    name = "gateway"

    tracing = Tracing()
    metrics = Metrics()
    startup_heap = FrozenStartupHeap()
    auth = Auth()
    readiness = Readiness()
    public = SharedPublicAnswers()
    identity = ServiceRpc("identity")
    catalog = ServiceRpc("catalog")
    intake = ServiceRpc("intake")
    approval = ServiceRpc("approval")
    notification = ServiceRpc("notification")

    # --- health -------------------------------------------------------------------------------
    @api("GET", "/healthz", summary="The gateway process is alive", auth=False, response_model=Alive)
    def healthz(self, request: Request) -> dict[str, Any]:
        return {"status": "ok"}

    @api("GET", "/readyz", summary="Broker, document store and every service answer", auth=False, response_model=Ready)
    def readyz(self, request: Request) -> tuple[int, dict[str, Any]]:
        checks = self.readiness.result(self._check_services)  # one check at a time per process
        failing = {name: why for name, why in checks.items() if why != "ok"}
        if not failing:
            return 200, {"status": "ready", "checks": checks}
        # An error like any other (api-v1: errors always have this shape), naming what does not answer.
        details = [{"field": name, "issue": why} for name, why in failing.items()]
        return 503, error_body("unavailable", f"not ready: {', '.join(failing)} does not answer", details)

    def _check_services(self) -> dict[str, str]:
        # Each service's ping round-trips the broker and reads its own database. All at once: a
        # probe waits PING_TIMEOUT at most, not that for each service that does not answer.
        pile: eventlet.GreenPile = eventlet.GreenPile(len(SERVICES))
        for name in SERVICES:
            # In a copy of this context, so each ping's span is a child of this request's.
            pile.spawn(contextvars.copy_context().run, self._ping, name)
        # Bounded as a whole: a ping's request could be stuck before its own wait begins (a publish
        # waiting for the broker), and readiness must then say so rather than hang.
        bound = PING_TIMEOUT + 1
        checks = dict.fromkeys(SERVICES, f"did not answer in {bound:g}s")
        with eventlet.Timeout(bound, False):
            for name, why in pile:
                checks[name] = why
        return checks

    def _ping(self, name: str) -> tuple[str, str]:
        try:
            call(getattr(self, name).ping, timeout=PING_TIMEOUT)
            return name, "ok"
        except Unavailable as exc:
            return name, str(exc)
        except Exception as exc:  # its store is down, or it failed otherwise
            return name, f"failing: {type(exc).__name__}"

    @api("GET", "/openapi.json", summary="This API's OpenAPI 3.1 description", auth=False)
    def openapi(self, request: Request) -> dict[str, Any]:
        return _openapi()

    # --- identity -----------------------------------------------------------------------------
    @api(
        "POST",
        "/api/v1/auth/register",
        summary="Register a citizen or enterprise account",
        auth=False,
        request_model=REGISTRATION,
        response_model=RegistrationResult,
        status=201,
    )
    def register(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = validated(REGISTRATION, read_json(request), tagged_by="account_type").model_dump(mode="json")
        address = client_address(request, self.auth.trusted_proxies)
        return 201, call(self.identity.register, body, address, own_key())

    @api(
        "POST",
        "/api/v1/auth/login",
        summary="Log in; returns an access and a refresh token",
        auth=False,
        request_model=LoginRequest,
        response_model=TokenPair,
    )
    def login(self, request: Request) -> dict[str, Any]:
        credentials = validated(LoginRequest, read_json(request)).model_dump()
        address = client_address(request, self.auth.trusted_proxies)
        return call(self.identity.login, {"credentials": credentials, "client_address": address})

    @api(
        "POST",
        "/api/v1/auth/refresh",
        summary="Trade a refresh token (once) for a new pair",
        auth=False,
        request_model=RefreshRequest,
        response_model=TokenPair,
    )
    def refresh(self, request: Request) -> dict[str, Any]:
        return call(self.identity.refresh, validated(RefreshRequest, read_json(request)).model_dump())

    @api(
        "POST",
        "/api/v1/auth/logout",
        summary="End this session: its tokens stop working",
        status=204,
        before_password_change=True,
    )
    def logout(self, request: Request, principal: Principal) -> tuple[int, None]:
        call(self.identity.logout, principal.model_dump())
        if principal.session_id:  # at once here; other gateway processes learn it from the event
            self.auth.revocations.add(principal.session_id, datetime.now(UTC) + timedelta(hours=1))
        return 204, None

    @api(
        "PUT",
        "/api/v1/me/password",
        summary="A new password, confirmed with the current one; the account's other sessions end",
        request_model=PasswordChange,
        status=204,
        before_password_change=True,
    )
    def change_my_password(self, request: Request, principal: Principal) -> tuple[int, None]:
        body = validated(PasswordChange, read_json(request)).model_dump()
        call(self.identity.change_password, principal.model_dump(), body, own_key())
        return 204, None

    @api(
        "POST",
        "/api/v1/auth/password-reset/code",
        summary="Forgotten password: text a code to the account's phone (the same answer for any login name)",
        auth=False,
        request_model=PasswordResetCodeRequest,
        response_model=PasswordResetCodeSent,
        status=202,
    )
    def send_password_reset_code(self, request: Request) -> tuple[int, dict[str, Any]]:
        body = validated(PasswordResetCodeRequest, read_json(request)).model_dump()
        address = client_address(request, self.auth.trusted_proxies)
        return 202, call(self.identity.send_password_reset_code, body, address)

    @api(
        "POST",
        "/api/v1/auth/password-reset",
        summary="Forgotten password: a new one with the code texted to the account's phone; every session ends",
        auth=False,
        request_model=PasswordReset,
        status=204,
    )
    def reset_password(self, request: Request) -> tuple[int, None]:
        body = validated(PasswordReset, read_json(request)).model_dump()
        call(self.identity.reset_password, body, client_address(request, self.auth.trusted_proxies))
        return 204, None

    @api(
        "GET",
        "/.well-known/jwks.json",
        summary="Public keys that verify access tokens",
        auth=False,
        response_model=JwkSet,
    )
    def jwks(self, request: Request) -> dict[str, Any]:
        return self.public.keys.result(lambda: call(self.identity.jwks))  # anonymous: shared a second

    @api("GET", "/api/v1/me", summary="The caller's account", response_model=UserView, before_password_change=True)
    def me(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.identity.get_user, principal.user_id)

    @api(
        "GET",
        "/api/v1/me/certificates",
        summary="Electronic certificates issued to the caller",
        roles=("applicant",),
        query=PageQuery,
        response_model=Listing[Certificate],
    )
    def my_certificates(self, request: Request, principal: Principal) -> dict[str, Any]:
        return paged_if_asked(call(self.identity.list_certificates, principal.user_id)["items"], request)

    @api(
        "GET",
        "/api/v1/me/contact",
        summary="The caller's phone and email (where SMS and email notifications go)",
        roles=("applicant",),
        response_model=ContactView,
    )
    def my_contact(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.identity.get_contact, principal.model_dump())

    @api(
        "PUT",
        "/api/v1/me/contact",
        summary="A new phone (also a login name; with the code texted to it) and/or email (null removes it), "
        "confirmed with the password",
        roles=("applicant",),
        request_model=ContactChange,
        response_model=ContactView,
    )
    def change_my_contact(self, request: Request, principal: Principal) -> dict[str, Any]:
        # exclude_unset: an email left out stays; an email given as null is removed.
        body = validated(ContactChange, read_json(request)).model_dump(mode="json", exclude_unset=True)
        return call(self.identity.change_contact, principal.model_dump(), body)

    @api(
        "POST",
        "/api/v1/me/contact/phone-code",
        summary="Text a one-time code to a new phone; changing the phone then needs it",
        roles=("applicant",),
        request_model=PhoneCodeRequest,
        response_model=PhoneCodeSent,
        status=202,
    )
    def send_phone_code(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        body = validated(PhoneCodeRequest, read_json(request)).model_dump(mode="json")
        return 202, call(self.identity.send_phone_code, principal.model_dump(), body)

    @api(
        "POST",
        "/api/v1/me/verifications/real-name",
        summary="Real-name check against the population registry (assurance level 2)",
        roles=("applicant",),
        response_model=AssuranceView,
    )
    def verify_real_name(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.identity.verify_real_name, principal.model_dump())

    @api(
        "POST",
        "/api/v1/me/verifications/face",
        summary="Real-person face check (assurance level 3)",
        roles=("applicant",),
        request_model=FaceVerification,
        response_model=AssuranceView,
    )
    def verify_face(self, request: Request, principal: Principal) -> dict[str, Any]:
        body = validated(FaceVerification, read_json(request)).model_dump()
        return call(self.identity.verify_face, principal.model_dump(), body)

    @api(
        "POST",
        "/api/v1/admin/staff",
        summary="Create a staff account",
        roles=("admin",),
        request_model=StaffCreation,
        response_model=StaffCreated,
        status=201,
    )
    def create_staff(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        body = validated(StaffCreation, read_json(request)).model_dump(mode="json")
        self._department_exists(body["department_code"])
        return 201, call(self.identity.create_staff, principal.model_dump(), body, own_key())

    def _department_exists(self, code: str | None) -> None:
        """Staff belong to a department of the catalog's (a reviewer of no such department would
        never see a task); catalog owns departments, identity only stores the code."""
        if code is not None and code not in {d["code"] for d in call(self.catalog.list_departments)}:
            issue = f"no department {code} (GET /api/v1/catalog/departments lists them)"
            raise ValidationFailed("unknown department", [{"field": "department_code", "issue": issue}])

    @api(
        "POST",
        "/api/v1/admin/staff/<username>/password",
        summary="Set a new password for a staff account (staff have no phone to reset it); its sessions end",
        roles=("admin",),
        request_model=StaffPasswordReset,
        status=204,
    )
    def reset_staff_password(self, request: Request, principal: Principal, username: str) -> tuple[int, None]:
        body = validated(StaffPasswordReset, read_json(request)).model_dump()
        call(self.identity.reset_staff_password, principal.model_dump(), username, body)
        return 204, None

    @api(
        "GET",
        "/api/v1/admin/staff",
        summary="The staff directory by username, optionally of one department, role or state",
        roles=("admin",),
        query=StaffQuery,
        response_model=Page[StaffView],
    )
    def list_staff(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.identity.list_staff, principal.model_dump(), query_of(StaffQuery, request).model_dump())

    @api(
        "PUT",
        "/api/v1/admin/staff/<username>",
        summary="Change a staff account's name, roles and department (new roles or department end its sessions)",
        roles=("admin",),
        request_model=StaffUpdate,
        response_model=StaffView,
        headers=(IF_MATCH,),
    )
    def update_staff(self, request: Request, principal: Principal, username: str) -> dict[str, Any]:
        body = validated(StaffUpdate, read_json(request)).model_dump()
        self._department_exists(body["department_code"])
        version = if_match_version(request)
        return call(self.identity.update_staff, principal.model_dump(), username, body, version)

    @api(
        "PUT",
        "/api/v1/admin/staff/<username>/status",
        summary="Deactivate a staff account (its sessions end, it cannot log in) or activate it again",
        roles=("admin",),
        request_model=StaffStatusChange,
        response_model=StaffView,
    )
    def set_staff_status(self, request: Request, principal: Principal, username: str) -> dict[str, Any]:
        body = validated(StaffStatusChange, read_json(request)).model_dump()
        return call(self.identity.set_staff_status, principal.model_dump(), username, body)

    @api(
        "POST",
        "/api/v1/admin/signing-keys",
        summary="Rotate the token signing key",
        roles=("admin",),
        status=201,
        response_model=KeyRotated,
    )
    def rotate_signing_key(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        rotated = call(self.identity.rotate_signing_key, principal.model_dump())
        self.auth.keys.refresh()  # this process knows the new key at once; others on its first token
        self.public.keys.forget()  # and serves it in the key set at once; others within a second
        return 201, rotated

    @event_handler("identity", "identity.session_revoked.v1", handler_type=BROADCAST, reliable_delivery=False)
    def on_session_revoked(self, body: dict[str, Any]) -> None:
        _, revoked = parse_event(body, expected=SessionRevoked)
        self.auth.revocations.add(revoked.session_id, revoked.expires_at)

    @timer(interval=30)
    def catch_up_on_revocations(self) -> None:
        """The broadcast above is not queued while this process is away from the broker: ask
        identity for the list now and then, so a missed logout holds within 30 s of being back."""
        try:
            self.auth.revocations.reload()
        except Exception as exc:  # identity away: the events and the next round will do
            log.warning("revocations not reloaded: %s", type(exc).__name__)

    # --- catalog ------------------------------------------------------------------------------
    @api(
        "GET",
        "/api/v1/catalog/departments",
        summary="Departments",
        auth=False,
        query=PageQuery,
        response_model=Listing[Department],
    )
    def departments(self, request: Request) -> dict[str, Any]:
        departments = self.public.departments.result(lambda: call(self.catalog.list_departments))  # anonymous
        return paged_if_asked(departments, request)

    @api(
        "GET",
        "/api/v1/catalog/items",
        summary="Search published items",
        auth=False,
        query=ItemQuery,
        response_model=Page[ItemSummary],
    )
    def items(self, request: Request) -> dict[str, Any]:
        query = {
            k: v
            for k, v in request.args.items()
            if k in ("q", "department", "item_type", "handling_mode", "page", "page_size")
        }
        return call(self.catalog.search_items, query)

    @api(
        "GET",
        "/api/v1/catalog/items/<item_code>",
        summary="The published service guide of an item",
        auth=False,
        response_model=PublishedItem,
    )
    def item(self, request: Request, item_code: str) -> dict[str, Any]:
        annotate(item_code=item_code)
        return call(self.catalog.get_item, item_code)

    @api(
        "GET",
        "/api/v1/catalog/items/<item_code>/versions",
        summary="Every published version of an item, newest first",
        auth=False,
        response_model=Listing[VersionSummary],
    )
    def item_versions(self, request: Request, item_code: str) -> dict[str, Any]:
        return call(self.catalog.list_versions, item_code)

    @api(
        "GET",
        "/api/v1/catalog/items/<item_code>/versions/<int:version>",
        summary="One published version of an item's guide (cases keep the version they were submitted under)",
        auth=False,
        response_model=PublishedItem,
    )
    def item_version(self, request: Request, item_code: str, version: int) -> dict[str, Any]:
        return call(self.catalog.get_item, item_code, version)

    @api(
        "GET",
        "/api/v1/catalog/answers",
        summary="Guide passages that answer a question",
        auth=False,
        query=AnswerQuery,
        response_model=Answers,
    )
    def answers(self, request: Request) -> dict[str, Any]:
        return call(self.catalog.answer, {k: v for k, v in request.args.items() if k in ("q", "limit")})

    @api(
        "POST",
        "/api/v1/catalog/items",
        summary="Create the draft of a new item",
        roles=("admin",),
        request_model=GuideEdit,
        response_model=Draft,
        status=201,
    )
    def create_item_draft(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        return 201, call(self.catalog.create_draft, principal.model_dump(), read_json(request), own_key())

    @api(
        "PUT",
        "/api/v1/catalog/items/<item_code>",
        summary="Save the draft of an item's next version",
        roles=("admin",),
        request_model=GuideEdit,
        response_model=Draft,
    )
    def update_item_draft(self, request: Request, principal: Principal, item_code: str) -> dict[str, Any]:
        return call(self.catalog.update_draft, principal.model_dump(), item_code, read_json(request))

    @api(
        "GET",
        "/api/v1/catalog/items/<item_code>/draft",
        summary="The draft being edited",
        roles=("admin",),
        response_model=Draft,
    )
    def item_draft(self, request: Request, principal: Principal, item_code: str) -> dict[str, Any]:
        return call(self.catalog.get_draft, principal.model_dump(), item_code)

    @api(
        "POST",
        "/api/v1/catalog/items/<item_code>/publish",
        summary="Publish the draft as the item's next version",
        roles=("admin",),
        response_model=PublishedItem,
    )
    def publish_item(self, request: Request, principal: Principal, item_code: str) -> dict[str, Any]:
        annotate(item_code=item_code)
        return call(self.catalog.publish_draft, principal.model_dump(), item_code)

    @api(
        "POST",
        "/api/v1/catalog/items/<item_code>/withdrawal",
        summary="Withdraw an item: it takes no more applications until a new version is published",
        roles=("admin",),
        request_model=ItemWithdrawalRequest,
        response_model=ItemWithdrawal,
    )
    def withdraw_item(self, request: Request, principal: Principal, item_code: str) -> dict[str, Any]:
        annotate(item_code=item_code)
        return call(self.catalog.withdraw_item, principal.model_dump(), item_code, read_json(request), own_key())

    # --- cases --------------------------------------------------------------------------------
    @api(
        "POST",
        "/api/v1/cases",
        summary="Submit a case",
        request_model=SubmitCase,
        response_model=CaseCreated,
        status=201,
        also_status=(200,),  # the same Idempotency-Key and body again: the same case
        roles=("applicant",),
        headers=(IDEMPOTENCY_KEY,),
    )
    def submit_case(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        body = validated(SubmitCase, read_json(request)).model_dump(mode="json", exclude_none=True)
        # Without the client's key, one of our own: a redelivered submission must not make two cases.
        created = call(self.intake.submit_case, principal.model_dump(), body, command_key(request))
        annotate(case_no=created["case_no"], item_code=created["item_code"])
        replayed = created.pop("replayed", False)
        return (200 if replayed else 201), created

    @api(
        "GET",
        "/api/v1/cases",
        summary="The caller's cases, newest first",
        query=CaseListQuery,
        roles=("applicant",),
        response_model=Page[CaseSummary],
    )
    def list_cases(self, request: Request, principal: Principal) -> dict[str, Any]:
        status = query_of(CaseListQuery, request).status  # an unknown status is a 422, not an empty list
        return call(self.intake.list_cases, principal.model_dump(), status, page_query(request))

    @api(
        "GET",
        "/api/v1/cases/<case_no>",
        summary="One case with its decision and timeline",
        response_model=CaseView,
        audit_reads=True,  # a case shows its applicant's form: staff reads are on record
    )
    def get_case(self, request: Request, principal: Principal, case_no: str) -> dict[str, Any]:
        annotate(case_no=case_no)
        return call(self.intake.get_case, principal.model_dump(), case_no)

    @api(
        "POST",
        "/api/v1/documents",
        summary="Upload a PDF, JPEG or PNG (multipart field `file`, at most 10 MiB)",
        roles=("applicant",),
        upload="file",
        response_model=DocumentStored,
        status=201,
    )
    def upload_document(self, request: Request, principal: Principal) -> tuple[int, dict[str, Any]]:
        try:
            upload = documents.open_upload(request)
        except Exception:
            # The body was not read to its end (too large, cut short, stalled): the connection
            # closes after the answer rather than read and throw away the rest, or wait for it.
            close_after_answer(request.environ)
            raise
        who = principal.model_dump()
        document_id = call(self.intake.begin_document, who)
        try:
            summary = documents.stream(
                upload, lambda n, data: call(self.intake.add_document_chunk, who, document_id, n, data)
            )
        except Exception:
            try:
                call(self.intake.abort_document, who, document_id)  # nothing half-written stays behind
            except Exception:  # the client hears why its upload failed, not why the clean-up did
                log.warning("could not abort a failed upload", exc_info=True, extra={"document_id": document_id})
            raise
        return 201, call(self.intake.finish_document, who, document_id, summary)

    @api(
        "POST",
        "/api/v1/cases/<case_no>/supplements",
        summary="Hand in what a supplement request (补正) asked for",
        roles=("applicant",),
        request_model=Supplement,
        response_model=CaseView,
        headers=(COMMAND_KEY,),
    )
    def resubmit_case(self, request: Request, principal: Principal, case_no: str) -> dict[str, Any]:
        body = validated(Supplement, read_json(request)).model_dump(mode="json", exclude_none=True)
        return call(self.intake.resubmit_case, principal.model_dump(), case_no, body, command_key(request))

    @api(
        "POST",
        "/api/v1/cases/<case_no>/withdrawal",
        summary="Withdraw a case before it is decided",
        roles=("applicant",),
        response_model=CaseView,
        headers=(COMMAND_KEY,),
    )
    def withdraw_case(self, request: Request, principal: Principal, case_no: str) -> dict[str, Any]:
        return call(self.intake.withdraw_case, principal.model_dump(), case_no, command_key(request))

    @api(
        "POST",
        "/api/v1/cases/<case_no>/evaluation",
        summary="Evaluate the service once after a decision (好差评)",
        roles=("applicant",),
        request_model=Evaluation,
        response_model=CaseView,
        headers=(COMMAND_KEY,),
    )
    def evaluate_case(self, request: Request, principal: Principal, case_no: str) -> dict[str, Any]:
        body = validated(Evaluation, read_json(request)).model_dump(mode="json")
        return call(self.intake.evaluate_case, principal.model_dump(), case_no, body, command_key(request))

    # --- review -------------------------------------------------------------------------------
    @api(
        "GET",
        "/api/v1/review/tasks",
        summary="Cases of the reviewer's department waiting for it, earliest deadline first",
        roles=("reviewer",),
        query=TaskListQuery,
        response_model=Page[Task],
    )
    def review_tasks(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.intake.review_tasks, principal.model_dump(), request.args.get("status"), page_query(request))

    @api(
        "POST",
        "/api/v1/review/cases/<case_no>/decisions",
        summary="Accept, request supplement, approve or reject a case",
        roles=("reviewer",),
        request_model=ReviewDecision,
        response_model=CaseView,
        headers=(COMMAND_KEY,),
    )
    def review_case(self, request: Request, principal: Principal, case_no: str) -> dict[str, Any]:
        body = validated(ReviewDecision, read_json(request)).model_dump(mode="json")
        return call(self.intake.review_case, principal.model_dump(), case_no, body, command_key(request))

    # --- supervision and the working-day calendar -----------------------------------------------
    @api(
        "GET",
        "/api/v1/supervision/summary",
        summary="Counts and ratios per department and period (电子监察)",
        roles=("supervisor", "admin"),
        query=SupervisionQuery,
        response_model=SupervisionSummary,
    )
    def supervision_summary(self, request: Request, principal: Principal) -> dict[str, Any]:
        query = {k: v for k, v in request.args.items() if k in ("department", "from", "to")}
        return call(self.intake.supervision_summary, principal.model_dump(), query)

    @api(
        "GET",
        "/api/v1/calendar/<int:year>",
        summary="The working-day calendar of a year",
        auth=False,
        response_model=CalendarView,
    )
    def calendar(self, request: Request, year: int) -> dict[str, Any]:
        return call(self.intake.calendar_year, year)

    @api(
        "PUT",
        "/api/v1/admin/calendar/<int:year>",
        summary="Load a year's holidays and adjusted working days (State Council notice)",
        roles=("admin",),
        request_model=CalendarYear,
        response_model=CalendarView,
    )
    def load_calendar(self, request: Request, principal: Principal, year: int) -> dict[str, Any]:
        body = validated(CalendarYear, read_json(request)).model_dump(mode="json")
        return call(self.intake.load_calendar, principal.model_dump(), year, body)

    # --- audit trail --------------------------------------------------------------------------
    @api(
        "GET",
        "/api/v1/admin/audit",
        summary="Staff actions and administrative changes, newest first",
        roles=("admin",),
        query=PageQuery,
        response_model=Page[AuditEntry],
    )
    def audit_trail(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.identity.list_audit, principal.model_dump(), page_query(request))

    def audit(self, principal: Principal, request: Request, action: str, target: dict[str, str], status: int) -> None:
        """Record a staff change (called by `api` after it succeeded). The change is made already:
        if the trail cannot take the entry, say so loudly rather than fail the caller."""
        entry = AuditRecord(
            entry_id=uuid.uuid4().hex,
            actor_id=principal.user_id,
            actor_roles=list(principal.roles),
            action=action,
            target=target,
            status=status,
            at=datetime.now(UTC),
            address=client_address(request, self.auth.trusted_proxies),
            trace_id=current_trace_id() or None,
        )
        # A read's entry waits briefly: the read itself needs no identity, and must not wait long
        # for it while identity is away (the entry is then logged as lost).
        timeout = AUDIT_READ_TIMEOUT if action.startswith("GET ") else DEFAULT_TIMEOUT
        try:
            call(self.identity.record_audit, entry.model_dump(mode="json"), timeout=timeout)
        except Exception:
            log.error("audit entry lost", extra={"action": action, "actor_id": principal.user_id})

    # --- notifications ------------------------------------------------------------------------
    @api(
        "GET",
        "/api/v1/notifications",
        summary="The caller's messages",
        query=NotificationListQuery,
        response_model=Page[NotificationView],
    )
    def notifications(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(
            self.notification.list_notifications,
            principal.model_dump(),
            as_flag(request, "unread"),
            page_query(request),
        )

    @api("POST", "/api/v1/notifications/<notification_id>/read", summary="Mark a message read", status=204)
    def read_notification(self, request: Request, principal: Principal, notification_id: str) -> tuple[int, None]:
        call(self.notification.mark_read, principal.model_dump(), notification_id)
        return 204, None

    @api(
        "GET",
        "/api/v1/me/notification-preferences",
        summary="The channels the caller is told on (the inbox is always on)",
        response_model=NotificationPreferences,
    )
    def notification_preferences(self, request: Request, principal: Principal) -> dict[str, Any]:
        return call(self.notification.get_preferences, principal.model_dump())

    @api(
        "PUT",
        "/api/v1/me/notification-preferences",
        summary="Choose channels: sms needs a phone, email an address on the account",
        request_model=NotificationPreferences,
        response_model=NotificationPreferences,
    )
    def choose_notification_channels(self, request: Request, principal: Principal) -> dict[str, Any]:
        body = read_json(request)
        validated(NotificationPreferences, body)
        # As sent, not normalized (the inbox put first): a refusal names a channel by its place in
        # the caller's list.
        return call(self.notification.set_preferences, principal.model_dump(), {"channels": body["channels"]})
