"""Identity service entrypoints: registration, login, keys and applicant profiles."""

from __future__ import annotations

import os
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

from nameko.rpc import rpc
from nameko.timer import timer
from pydantic import TypeAdapter

from contracts.identity import ApplicantProfile, JwkSet, LoginRequest, Registration, TokenPair
from services.common.errors import EXPECTED_ERRORS, NotFound, Unauthenticated, validated
from services.common.mongo import Storage
from services.common.telemetry import Tracing
from services.identity import accounts, tokens
from services.identity.storage import IdentityStore

REGISTRATION = TypeAdapter(Registration)
REFRESH_TTL = timedelta(days=14)


class IdentityService:
    name = "identity"

    tracing = Tracing()
    store: IdentityStore = Storage(IdentityStore)

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def register(self, payload: dict[str, Any]) -> dict[str, Any]:
        registration = validated(REGISTRATION, payload)
        doc = accounts.new_applicant(registration)
        self.store.insert_user(doc, accounts.login_field(doc))
        return accounts.registration_result(doc).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS, sensitive_arguments=("payload",))
    def login(self, payload: dict[str, Any]) -> dict[str, Any]:
        request = validated(LoginRequest, payload)
        user = self.store.find_by_login(accounts.login_keys(request.username), request.username)
        if not accounts.password_matches(user and user["password_hash"], request.password):
            raise Unauthenticated("wrong username or password")
        return self._issue_tokens(user).model_dump(mode="json")

    @rpc
    def jwks(self) -> dict[str, Any]:
        self._signing_key()  # make sure one exists before anyone asks to verify
        return JwkSet(keys=self.store.public_keys()).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def get_user(self, user_id: str) -> dict[str, Any]:
        return accounts.user_view(self._user(user_id)).model_dump(mode="json")

    @rpc(expected_exceptions=EXPECTED_ERRORS)
    def applicant_profile(self, user_id: str) -> dict[str, Any]:
        profile: ApplicantProfile = accounts.applicant_profile(self._user(user_id), date.today(), certificates=[])
        return profile.model_dump(mode="json")

    @rpc
    def ping(self) -> str:
        self.store.login_key_exists("ping")
        return "pong"

    @rpc
    @timer(interval=3600, eager=True)
    def ensure_admin(self) -> str:
        """Create the first admin from YIWANG_ADMIN_USERNAME/PASSWORD if missing (make seed, first start)."""
        username = os.environ.get("YIWANG_ADMIN_USERNAME", "admin")
        password = os.environ.get("YIWANG_ADMIN_PASSWORD", "Yiwang-admin-2026")
        if not self.store.login_key_exists(f"staff:{username}"):
            doc = accounts.new_staff(username, "系统管理员", password, ["admin"], None)
            self.store.insert_user(doc, "username")
        return username

    def _user(self, user_id: str) -> dict[str, Any]:
        user = self.store.get_user(user_id)
        if user is None:
            raise NotFound("no such user")
        return user

    def _signing_key(self) -> dict[str, Any]:
        return self.store.active_key(tokens.new_signing_key())

    def _issue_tokens(self, user: dict[str, Any]) -> TokenPair:
        access, expires_in = tokens.issue_access_token(self._signing_key(), user)
        refresh, digest = tokens.new_refresh_token()
        self.store.store_refresh_token(digest, user["_id"], uuid.uuid4().hex, datetime.now(UTC) + REFRESH_TTL)
        return TokenPair(access_token=access, refresh_token=refresh, expires_in=expires_in)
