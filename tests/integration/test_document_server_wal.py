"""The document server's write-ahead log stays bounded under a stream of updates.

FerretDB wrote an update while the query that found the document was still open on another
connection, so SQLite could never start its WAL over: the file grew by every write, and every
commit past the checkpoint threshold ran a checkpoint of its own. patch_ferretdb.sh makes an
update read what it matches, and close that query, before it writes."""

from __future__ import annotations

import sqlite3

from pymongo import ReturnDocument

from tests.integration.test_document_server_id_index import DATA_DIR

UPDATES = 1_500  # each wrote 3 frames that were never reused: 4,500 frames before the change
AUTOCHECKPOINT = 1_000  # SQLite's default threshold, in frames


def test_updates_reuse_the_write_ahead_log_instead_of_growing_it(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_wal"]
    docs = db.docs
    docs.insert_many([{"_id": f"D-{n}", "n": 0, "pad": "x" * 2_000} for n in range(100)])
    for n in range(UPDATES):
        if n % 3 == 0:
            docs.update_one({"_id": f"D-{n % 100}", "n": {"$gte": 0}}, {"$inc": {"n": 1}})
        elif n % 3 == 1:
            docs.find_one_and_update({"_id": f"D-{n % 100}"}, {"$inc": {"n": 1}}, return_document=ReturnDocument.AFTER)
        else:
            docs.update_many({"_id": {"$in": [f"D-{n % 100}"]}}, {"$inc": {"n": 1}})

    assert sum(doc["n"] for doc in docs.find({}, {"n": 1})) == UPDATES  # every update landed once
    file = DATA_DIR / f"{db.name}.sqlite"
    with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as sql:
        (page,) = sql.execute("PRAGMA page_size").fetchone()
    frames = (file.with_name(file.name + "-wal").stat().st_size - 32) // (page + 24)
    # Bounded: started over after a checkpoint, it holds at most about one threshold's worth.
    assert frames < 2 * AUTOCHECKPOINT, f"the WAL holds {frames} frames after {UPDATES} updates"
