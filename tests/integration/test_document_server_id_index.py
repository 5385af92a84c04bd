"""The document server looks documents up by _id through FerretDB's own _id index: FerretDB's
queries used another form of the expression than its index, which made every lookup a full scan
(patch_ferretdb.sh's seventh change), and the second index earlier wrappers added to make up for it
is dropped (infra/docserver/legacy_id_index.go)."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

DATA_DIR = Path(os.environ.get("YIWANG_DOCSERVER_DATA", Path.home() / ".local/state/yiwang/docserver-data"))


def sqlite_plan(db, query: dict) -> str:
    """The SQLite plan FerretDB reports for a find (its explain runs the statement the find runs)."""
    return " ".join(db.command({"explain": {"find": "cases", "filter": query}})["queryPlanner"]["Plan"])


def test_lookups_by_id_use_ferretdbs_own_index(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_probe"]
    db.cases.insert_many([{"_id": f"C-{n}", "status": "submitted"} for n in range(200)])
    for query in ({"_id": "C-7"}, {"_id": "C-7", "status": "submitted"}):
        plan = sqlite_plan(db, query)
        assert re.search(r"SEARCH \S+ USING INDEX \S+__id_ ", plan), plan  # FerretDB's `_id_` index
    assert "SCAN" in sqlite_plan(db, {"status": "submitted"})  # the plan is the real one
    assert db.cases.find_one({"_id": "C-7"})["status"] == "submitted"

    file = DATA_DIR / f"{db.name}.sqlite"
    with sqlite3.connect(f"file:{file}?mode=ro", uri=True) as sql:
        indexes = [row[0] for row in sql.execute("SELECT name FROM sqlite_master WHERE type = 'index'")]
    assert indexes and not [name for name in indexes if name.endswith("_yiwang_id")], indexes


def test_a_filter_with_conditions_beside_its_id_is_narrowed_by_the_id(mongo_client, db_prefix):
    """FerretDB narrows by _id only for exactly {_id: ...}; patch_ferretdb.sh makes {_id, ...} narrow
    too (every conditional update we make), in its queries and in its explain, which says so."""
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
