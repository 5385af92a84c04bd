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
