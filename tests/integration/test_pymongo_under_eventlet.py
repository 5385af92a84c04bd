"""pymongo's own suite no longer covers eventlet: prove it works inside nameko workers, concurrently,
against the document server we run (and pin the versions in requirements.lock)."""

from __future__ import annotations

import eventlet
import pymongo
from nameko.rpc import rpc
from nameko.standalone.rpc import ServiceRpcClient
from pymongo import ReturnDocument
from pymongo.database import Database

from services.common.mongo import Storage

CONCURRENT_WRITES = 50


class CounterStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    def ensure_indexes(self) -> None:
        self.db["writes"].create_index("n", unique=True)

    def write(self, n: int) -> int:
        # A blocking round trip held open across greenthreads, then an atomic counter.
        eventlet.sleep(0.01)
        self.db["writes"].insert_one({"n": n})
        doc = self.db["counters"].find_one_and_update(
            {"_id": "c"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return doc["value"]


class WriterService:
    name = "writer"
    store = Storage(CounterStore)

    @rpc
    def write(self, n: int) -> int:
        return self.store.write(n)


def test_fifty_concurrent_writes_from_nameko_workers(container_factory, rabbit_config, store_config, mongo_client):
    container = container_factory(WriterService, {**store_config, "max_workers": CONCURRENT_WRITES})
    container.start()

    with ServiceRpcClient("writer") as writer:
        replies = [writer.write.call_async(n) for n in range(CONCURRENT_WRITES)]
        results = sorted(reply.result() for reply in replies)

    # Every worker got a distinct counter value: the writes really interleaved and none was lost.
    assert results == list(range(1, CONCURRENT_WRITES + 1))
    db = mongo_client[f"{store_config['MONGO_DB_PREFIX']}_writer"]
    assert db["writes"].count_documents({}) == CONCURRENT_WRITES
    assert db["counters"].find_one({"_id": "c"})["value"] == CONCURRENT_WRITES
    assert pymongo.version_tuple >= (4, 0)
