"""The document server looks documents up by _id through an index (infra/docserver/id_index.go):
FerretDB's own _id index cannot serve its own queries, which made every lookup a full scan."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

from tests.support import eventually

DATA_DIR = Path(os.environ.get("YIWANG_DOCSERVER_DATA", Path.home() / ".local/state/yiwang/docserver-data"))


def test_a_new_collection_gets_an_index_its_id_lookups_use(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_probe"]
    db.cases.insert_many([{"_id": f"C-{n}", "status": "submitted"} for n in range(200)])
    file = DATA_DIR / f"{db.name}.sqlite"
    assert file.exists(), f"expected FerretDB's SQLite file at {file}"

    def plan() -> str | None:
        with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as sql:
            (table,) = sql.execute("SELECT table_name FROM _ferretdb_collections WHERE name = 'cases'").fetchone()
            indexes = {row[0] for row in sql.execute("SELECT name FROM sqlite_master WHERE tbl_name = ?", (table,))}
            if f"{table}_yiwang_id" not in indexes:
                return None
            # Exactly the statement FerretDB runs for find({"_id": ...}).
            query = f"EXPLAIN QUERY PLAN SELECT _ferretdb_sjson FROM \"{table}\" WHERE _ferretdb_sjson->'$._id' = ?"
            return " ".join(row[3] for row in sql.execute(query, ('"C-7"',)))

    found = eventually(plan, timeout=10, what="the _id index on the new collection")
    assert "USING INDEX" in found and "_yiwang_id" in found, found
    assert db.cases.find_one({"_id": "C-7"})["status"] == "submitted"


def test_a_filter_with_conditions_beside_its_id_is_narrowed_by_the_id(mongo_client, db_prefix):
    """FerretDB narrows by _id only for exactly {_id: ...}; patch_ferretdb.sh makes {_id, ...} narrow
    too (every conditional update we make), in its queries and in its explain, which says so.
    (Explain's SQLite plan is not asked: a pooled connection may plan with a schema from before
    id_index.go added the index, which the queries themselves do not.)"""
    db = mongo_client[f"{db_prefix}_probe"]
    db.cases.insert_many([{"_id": f"C-{n}", "status": "submitted", "version": 1} for n in range(5)])

    def narrowed(query: dict) -> bool:
        return db.command({"explain": {"find": "cases", "filter": query}})["filterPushdown"]

    assert narrowed({"_id": "C-3"})
    assert narrowed({"_id": "C-3", "status": "approved", "version": {"$gt": 0}})
    assert narrowed({"status": "approved", "_id": "C-3"})
    assert not narrowed({"status": "approved"})
    assert not narrowed({"_id": 3, "status": "approved"})  # only string ids, as FerretDB's own rule


def test_conditions_beside_the_id_still_decide_what_matches(mongo_client, db_prefix):
    cases = mongo_client[f"{db_prefix}_probe"].cases
    cases.insert_many([{"_id": f"C-{n}", "status": "submitted", "version": n} for n in range(5)] + [{"_id": 7}])
    assert cases.find_one({"_id": "C-3", "status": "submitted"})["version"] == 3
    assert cases.find_one({"_id": "C-3", "status": "approved"}) is None
    assert cases.update_one({"_id": "C-3", "version": 2}, {"$set": {"status": "approved"}}).matched_count == 0
    assert cases.update_one({"_id": "C-3", "version": 3}, {"$set": {"status": "approved"}}).modified_count == 1
    either = {"$or": [{"x": {"$exists": False}}, {"x": {"$lt": 1}}]}
    assert cases.update_one({"_id": "C-4", **either}, {"$set": {"x": 1}}).modified_count == 1
    assert cases.update_one({"_id": "C-4", **either}, {"$set": {"x": 2}}).matched_count == 0
    assert cases.find_one({"_id": 7, "status": {"$exists": False}}) == {"_id": 7}  # not a string: as before
    assert cases.delete_one({"_id": "C-1", "status": "approved"}).deleted_count == 0
    assert cases.count_documents({"_id": "C-1", "status": "submitted"}) == 1
