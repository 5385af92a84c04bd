"""Single-document updates must be atomic, as in MongoDB: Yiwang's counters, idempotency guards and
outbox bookkeeping rely on it. FerretDB v1 alone loses concurrent updates; our docserver's proxy
(infra/docserver/atomic_proxy.go) serializes them per collection. These fail without it."""

from __future__ import annotations

import eventlet
from pymongo import ReturnDocument

WRITERS = 40


def test_concurrent_inc_loses_nothing(mongo_client, db_prefix):
    collection = mongo_client[f"{db_prefix}_atomic"]["counters"]
    collection.insert_one({"_id": "c", "value": 0})
    pool = eventlet.GreenPool(WRITERS)
    for _ in range(WRITERS):
        pool.spawn(collection.update_one, {"_id": "c"}, {"$inc": {"value": 1}})
    pool.waitall()
    assert collection.find_one({"_id": "c"})["value"] == WRITERS


def test_find_one_and_update_hands_out_distinct_values(mongo_client, db_prefix):
    collection = mongo_client[f"{db_prefix}_atomic"]["sequences"]

    def take() -> int:
        doc = collection.find_one_and_update(
            {"_id": "seq"}, {"$inc": {"value": 1}}, upsert=True, return_document=ReturnDocument.AFTER
        )
        return doc["value"]

    pool = eventlet.GreenPool(WRITERS)
    values = list(pool.imap(lambda _: take(), range(WRITERS)))
    assert sorted(values) == list(range(1, WRITERS + 1))


def test_updates_of_different_fields_do_not_overwrite_each_other(mongo_client, db_prefix):
    # The server rewrites whole documents; without isolation one $set would undo the other.
    collection = mongo_client[f"{db_prefix}_atomic"]["docs"]
    collection.insert_one({"_id": "d"})
    pool = eventlet.GreenPool(WRITERS)
    for n in range(WRITERS):
        pool.spawn(collection.update_one, {"_id": "d"}, {"$set": {f"f{n}": n}})
    pool.waitall()
    assert len(collection.find_one({"_id": "d"})) == WRITERS + 1
