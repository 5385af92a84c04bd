"""Every command a service sends to the document server is counted by command and collection, and
timed: operators (and `make bench-cpu`) see what the store is asked for."""

from __future__ import annotations

from services.common.metrics import STORE_COMMAND_SECONDS, STORE_COMMANDS
from services.common.mongo import client_for
from tests.support import MONGO_URI


def counted(command: str, collection: str) -> float:
    return STORE_COMMANDS.labels(command, collection)._value.get()


def timed(command: str) -> float:
    return sum(b.get() for b in STORE_COMMAND_SECONDS.labels(command)._buckets)


def test_commands_of_the_process_client_are_counted_by_collection(db_prefix):
    db = client_for(MONGO_URI)[f"{db_prefix}_metrics"]
    inserts, finds, updates = counted("insert", "things"), counted("find", "things"), counted("update", "things")
    timed_finds = timed("find")

    db.things.insert_one({"_id": 1, "n": 0})
    db.things.update_one({"_id": 1}, {"$inc": {"n": 1}})
    db.things.find_one({"_id": 1})
    db.things.find_one({"_id": 1})

    assert counted("insert", "things") == inserts + 1
    assert counted("update", "things") == updates + 1
    assert counted("find", "things") == finds + 2
    assert timed("find") == timed_finds + 2
