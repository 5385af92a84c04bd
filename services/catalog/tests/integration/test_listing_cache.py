"""Each catalog process caches the listing; a publish through any process must show at once."""

from __future__ import annotations

from contracts.envelope import new_event
from contracts.events import ItemPublished
from services.catalog.seed_data import seed_items
from services.catalog.storage import CatalogStore


def published(guide: dict) -> object:
    return new_event(
        ItemPublished(item_code=guide["item_code"], version=1, department_code=guide["department_code"]), "catalog"
    )


def test_a_publish_in_one_process_is_seen_by_the_cache_of_another(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_catalog"]
    reader, writer = CatalogStore(db), CatalogStore(db)
    first, second = seed_items()[0], seed_items()[3]
    writer.insert_version(first, 1, published(first))
    assert [d["item_code"] for d in reader.listing()] == [first["item_code"]]
    assert reader.listing() is reader.listing()  # cached while nothing changes

    writer.insert_version(second, 1, published(second))
    assert sorted(d["item_code"] for d in reader.listing()) == sorted([first["item_code"], second["item_code"]])
    rows, total = reader.filtered({"department_code": second["department_code"]}, 0, 20)
    assert total == 1 and rows[0]["item_code"] == second["item_code"] and "guide" not in rows[0]

    # A new version replaces the listed one everywhere.
    writer.insert_version({**first, "name": "高龄津贴申领（新版）"}, 2, published(first))
    assert {d["item_code"]: d["name"] for d in reader.listing()}[first["item_code"]] == "高龄津贴申领（新版）"
