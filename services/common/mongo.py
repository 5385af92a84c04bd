"""The Mongo dependency provider: one client per process, one database per service.

Storage classes (each service's `storage.py`) are the only code that touches pymongo; this
provider hands a worker an instance of the service's store bound to its database.
"""

from __future__ import annotations

import threading
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Protocol

import pymongo
import pymongo.errors
from nameko import config
from nameko.extensions import DependencyProvider
from pymongo.database import Database

from services.common.metrics import StoreCommandListener
from services.common.outbox import OutboxCollection

MONGO_URI_KEY = "MONGO_URI"
MONGO_SOCKET_KEY = "MONGO_SOCKET"
DB_PREFIX_KEY = "MONGO_DB_PREFIX"

_clients: dict[str, pymongo.MongoClient] = {}

# The store cannot be reached (down, restarting, connection cut, silent past COMMAND_TIMEOUT): the
# caller may try again later.
STORE_UNREACHABLE = pymongo.errors.ConnectionFailure

# How long one command waits for the store's answer. A store gone silent (its host gone without a
# reset) would otherwise hold the worker until TCP gives up, minutes later. Three times the RPC
# timeout: the caller has heard 503 long before, and no command of a request or handler runs this
# long on a healthy store. Index builds and migrations at start may: they use a client of their own.
COMMAND_TIMEOUT = 30.0  # seconds


def client_for(uri: str) -> pymongo.MongoClient:
    """One pooled client per URI and process: pymongo clients are thread(greenlet)-safe."""
    client = _clients.get(uri)
    if client is None:
        client = new_client(uri, COMMAND_TIMEOUT)
        _clients[uri] = client
    return client


def new_client(uri: str, command_timeout: float | None) -> pymongo.MongoClient:
    return pymongo.MongoClient(
        uri,
        serverSelectionTimeoutMS=5000,
        connectTimeoutMS=5000,
        socketTimeoutMS=None if command_timeout is None else int(command_timeout * 1000),
        tz_aware=True,
        event_listeners=[StoreCommandListener()],
    )


def store_uri(settings: Any) -> str:
    """Where the store is: MONGO_SOCKET, the Unix socket of a document server on this machine, when
    one is set (a command costs both ends less CPU than over loopback TCP), else MONGO_URI."""
    socket_path = settings.get(MONGO_SOCKET_KEY)
    if socket_path:
        return f"mongodb://{urllib.parse.quote(str(socket_path), safe='')}/"
    return settings[MONGO_URI_KEY]


def database_name(service_name: str) -> str:
    return f"{config.get(DB_PREFIX_KEY, 'yiwang')}_{service_name}"


class Store(Protocol):
    def __init__(self, db: Database) -> None: ...

    def ensure_indexes(self) -> None: ...


class Storage(DependencyProvider):
    """Injects `store_cls(db)`; indexes are ensured once when the container starts."""

    def __init__(self, store_cls: type[Store], database: str | None = None) -> None:
        self.store_cls = store_cls
        self.database = database
        self.store: Any = None

    def setup(self) -> None:
        self._lock = threading.Lock()

    def start(self) -> None:
        self._ensure_store()

    def stop(self) -> None:
        # Workers are done: delete the markers of what they published (else orphans, removed later).
        if self.store is None:
            return  # stopped before the store was built
        for value in vars(self.store).values():
            if isinstance(value, OutboxCollection):
                value.flush()

    def get_dependency(self, worker_ctx: Any) -> Any:
        # An eager timer may fire before this provider's start(): build the store on first use too.
        return self.store or self._ensure_store()

    def _ensure_store(self) -> Any:
        # Not in setup(): tracing (another provider's setup) must hook pymongo before a client exists.
        with self._lock:
            if self.store is None:
                uri, name = store_uri(config), database_name(self.database or self.container.service_name)
                # An index build or a migration on a large collection may run for minutes: on a
                # client without the command bound, closed once done (start needs it only once).
                with new_client(uri, command_timeout=None) as patient:
                    self.store_cls(patient[name]).ensure_indexes()
                self.store = self.store_cls(client_for(uri)[name])
        return self.store


def run_once(db: Database, name: str, migrate: Callable[[], None]) -> None:
    """Run a store migration once per database (recorded in `migrations`); idempotent `migrate`
    functions only, as processes starting together may each run it before the record is written."""
    if db["migrations"].find_one({"_id": name}) is None:
        migrate()
        db["migrations"].update_one({"_id": name}, {"$set": {"at": datetime.now(UTC)}}, upsert=True)


def breaks_unique_index(exc: pymongo.errors.PyMongoError) -> bool:
    """Whether a write failed on a unique index. MongoDB says so with DuplicateKeyError (11000)
    for every write; the stand-in does for inserts, but an update that would break a unique index
    comes back as an InternalError carrying SQLite's message."""
    if isinstance(exc, pymongo.errors.DuplicateKeyError):
        return True
    return isinstance(exc, pymongo.errors.OperationFailure) and "UNIQUE constraint failed" in str(exc)


# --- read models kept in documents of entries: shared update shapes ---------------------------------


def absent_or_below(key: str, field: str, value: Any) -> dict[str, Any]:
    """Filter: the entry `key` is missing, or its `field` is below `value` (a newer write wins)."""
    return {"$or": [{key: {"$exists": False}}, {f"{key}.{field}": {"$lt": value}}]}


def update_entry(
    collection: Any, doc_id: Any, query: dict[str, Any], change: dict[str, Any], empty: dict[str, Any]
) -> Any:
    """Apply `change` to document `doc_id` where `query` holds, first creating the document as
    `empty` if there is none yet. One write in the usual case, three for a document's first entry
    (or when `query` does not hold, which a retry of the same change then tells)."""
    query = {"_id": doc_id, **query}
    result = collection.update_one(query, change)
    if not result.matched_count:
        collection.update_one({"_id": doc_id}, {"$setOnInsert": empty}, upsert=True)
        result = collection.update_one(query, change)
    return result
