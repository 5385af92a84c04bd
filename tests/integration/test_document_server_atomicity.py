"""Single-document updates must be atomic, as in MongoDB: Yiwang's counters, idempotency guards and
outbox bookkeeping rely on it. FerretDB v1 alone loses concurrent updates; our docserver's proxy
(infra/docserver/atomic_proxy.go) serializes them per collection. These fail without it, and the
last fails if its Unix socket (infra/docserver/listeners.go, which local services use) bypassed the
proxy or locked apart from TCP."""

from __future__ import annotations

import os
from collections.abc import Iterator

import eventlet
import pymongo
import pytest
from pymongo import ReturnDocument

from infra.system import docserver_socket
from services.common.mongo import store_uri

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


@pytest.fixture
def unix_client() -> Iterator[pymongo.MongoClient]:
    path = docserver_socket(os.environ)
    assert path.is_socket(), f"infra/docserver.sh start opens {path}: is the server older than the script?"
    client = pymongo.MongoClient(store_uri({"MONGO_SOCKET": path}), serverSelectionTimeoutMS=5000)
    yield client
    client.close()


def test_clients_over_tcp_and_the_unix_socket_share_the_locks(mongo_client, unix_client, db_prefix):
    name = f"{db_prefix}_atomic"
    mongo_client[name]["counters"].insert_one({"_id": "c", "value": 0, "log": []})
    pool = eventlet.GreenPool(WRITERS)
    for n in range(WRITERS):
        client = (mongo_client, unix_client)[n % 2]
        pool.spawn(client[name]["counters"].update_one, {"_id": "c"}, {"$inc": {"value": 1}, "$push": {"log": n}})
    pool.waitall()
    doc = unix_client[name]["counters"].find_one({"_id": "c"})
    assert doc["value"] == WRITERS and sorted(doc["log"]) == list(range(WRITERS))
