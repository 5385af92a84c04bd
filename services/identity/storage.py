"""Identity's store: users, signing keys and refresh tokens."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.database import Database
from pymongo.errors import DuplicateKeyError

from services.common.errors import Conflict


class IdentityStore:
    def __init__(self, db: Database) -> None:
        self.users = db["users"]
        self.keys = db["signing_keys"]
        self.refresh_tokens = db["refresh_tokens"]

    def ensure_indexes(self) -> None:
        # `login_key`: id number, credit code or "staff:<username>"; `phone_key`: the phone, or a
        # per-user placeholder for staff (the server has no partial indexes).
        self.users.create_index([("login_key", ASCENDING)], unique=True)
        self.users.create_index([("phone_key", ASCENDING)], unique=True)

    def insert_user(self, doc: dict[str, Any], login_field: str) -> None:
        """Insert, or Conflict naming the public field that is already registered."""
        try:
            self.users.insert_one(doc)
        except DuplicateKeyError:
            # The server does not say which unique index fired; ask.
            taken = self.users.count_documents({"login_key": doc["login_key"]}, limit=1) > 0
            field = login_field if taken else "phone"
            raise Conflict(
                f"{field} is already registered", [{"field": field, "issue": "already registered"}]
            ) from None

    def find_by_login(self, keys: list[str], phone: str) -> dict[str, Any] | None:
        return self.users.find_one({"$or": [{"login_key": {"$in": keys}}, {"phone_key": phone}]})

    def get_user(self, user_id: str) -> dict[str, Any] | None:
        return self.users.find_one({"_id": user_id})

    def login_key_exists(self, login_key: str) -> bool:
        return self.users.count_documents({"login_key": login_key}, limit=1) > 0

    def active_key(self, candidate: dict[str, Any]) -> dict[str, Any]:
        """The active signing key; `candidate` is stored only if none exists yet (atomic upsert)."""
        return self.keys.find_one_and_update(
            {"_id": "active"},
            {"$setOnInsert": candidate},
            upsert=True,
            return_document=ReturnDocument.AFTER,
        )

    def public_keys(self) -> list[dict[str, Any]]:
        return [doc["public_jwk"] for doc in self.keys.find({}, {"public_jwk": 1})]

    def store_refresh_token(self, digest: str, user_id: str, family: str, expires_at: datetime) -> None:
        self.refresh_tokens.insert_one(
            {
                "_id": digest,
                "user_id": user_id,
                "family": family,
                "expires_at": expires_at,
                "created_at": datetime.now(UTC),
            }
        )
