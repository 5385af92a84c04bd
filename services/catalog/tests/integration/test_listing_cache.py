"""Each catalog process caches the listing; a publish through any process must show at once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from pymongo.monitoring import CommandListener

from contracts.envelope import new_event
from contracts.events import ItemPublished, ItemWithdrawn
from services.catalog.search import index_fields
from services.catalog.seed_data import seed_items
from services.catalog.storage import CatalogStore
from services.common.errors import Conflict


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
    # Search ranks the listed rows themselves, with the token sets built once per listing (a copy
    # without them made every query build them again).
    found = reader.candidates(index_fields(first)["name_tokens"], {})
    assert found and all(any(d is row for row in reader.listing()) for d in found)

    writer.insert_version(second, 1, published(second))
    assert sorted(d["item_code"] for d in reader.listing()) == sorted([first["item_code"], second["item_code"]])
    rows, total = reader.filtered({"department_code": second["department_code"]}, 0, 20)
    assert total == 1 and rows[0]["item_code"] == second["item_code"] and "guide" not in rows[0]

    # A new version replaces the listed one everywhere.
    writer.insert_version({**first, "name": "高龄津贴申领（新版）"}, 2, published(first))
    assert {d["item_code"]: d["name"] for d in reader.listing()}[first["item_code"]] == "高龄津贴申领（新版）"


def withdrawn(guide: dict, version: int) -> object:
    return new_event(
        ItemWithdrawn(item_code=guide["item_code"], version=version, department_code=guide["department_code"]),
        "catalog",
    )


def withdrawal(guide: dict, version: int) -> dict:
    return {
        "item_code": guide["item_code"],
        "version": version,
        "reason": "取消",
        "withdrawn_at": datetime.now(UTC),
        "withdrawn_by": "admin-1",
    }


def test_a_withdrawal_leaves_every_processs_listing_and_a_new_version_ends_it(mongo_client, db_prefix):
    db = mongo_client[f"{db_prefix}_catalog"]
    reader, writer = CatalogStore(db), CatalogStore(db)
    first, second = seed_items()[0], seed_items()[3]
    writer.insert_version(first, 1, published(first))
    writer.insert_version(second, 1, published(second))
    assert len(reader.listing()) == 2

    # Only the version that is current, and only once.
    assert not writer.withdraw(withdrawal(first, 2), withdrawn(first, 2))
    assert writer.withdraw(withdrawal(first, 1), withdrawn(first, 1))
    assert not writer.withdraw(withdrawal(first, 1), withdrawn(first, 1))
    assert len(reader.listing()) == 2  # cached until the listings are told
    writer.listing_changed()
    assert [d["item_code"] for d in reader.listing()] == [second["item_code"]]
    found = reader.candidates(index_fields(first)["name_tokens"], {})
    assert first["item_code"] not in [d["item_code"] for d in found]
    latest = reader.latest_version(first["item_code"])
    assert latest["version"] == 1 and latest["withdrawn"]["reason"] == "取消"
    assert "withdrawn" not in reader.get_version(first["item_code"], 1)  # versions stay as published
    # The withdrawal's event waits in the row's outbox until it is published.
    assert [event["type"] for _, event, _ in writer.current_outbox.pending(timedelta(0))] == [
        "catalog.item_withdrawn.v1"
    ]

    writer.insert_version({**first, "name": "高龄津贴申领（新版）"}, 2, published(first))
    assert {d["item_code"]: d["name"] for d in reader.listing()}[first["item_code"]] == "高龄津贴申领（新版）"
    assert "withdrawn" not in reader.latest_version(first["item_code"])
    assert reader.repair_current() == 0


def test_a_listing_row_repaired_keeps_a_full_json_schema_storable(mongo_client, db_prefix):
    # A process that died mid-publish left a version without its listing row; the repair rebuilds
    # the row from the version as read (its form_schema decoded), which must be stored again.
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema", "enum": [[0, 1]], "type": "object"}
    guide = {**seed_items()[0], "form_schema": schema}
    store.insert_version(guide, 1, published(guide))
    store.current.delete_one({"_id": guide["item_code"]})
    assert store.repair_current() == 1
    assert [d["item_code"] for d in store.listing()] == [guide["item_code"]]
    assert store.latest_version(guide["item_code"])["form_schema"] == schema


def test_a_version_whose_publisher_died_before_the_current_row_moved_is_served_after_all(
    mongo_client, db_prefix, monkeypatch
):
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    store.insert_version(guide, 1, published(guide))

    def died(doc):
        raise ConnectionError("the publisher died here")

    with monkeypatch.context() as m:
        m.setattr(store, "_advance_current", died)
        with pytest.raises(ConnectionError):
            store.insert_version({**guide, "name": "高龄津贴申领（新版）"}, 2, published(guide))
    assert store.latest_version(code)["version"] == 1  # stored, announced by the relay, not served
    # The admin's next publish takes the number after it (before, every retry took 2: 409 for good).
    assert store.next_version(code) == 3

    # A writer that does collide with it (the same publish retried under its draft's number) gets
    # the version as stored, and the row moves.
    doc, inserted = store.insert_version(guide, 2, published(guide))
    assert (doc["name"], inserted) == ("高龄津贴申领（新版）", False)
    assert store.latest_version(code)["version"] == 2
    assert store.latest_version(code)["name"] == "高龄津贴申领（新版）"
    store.insert_version(guide, 3, published(guide))
    assert store.latest_version(code)["version"] == 3

    # The relay's step before it announces a version does the same, and never moves the row back.
    store.advance_current_to(code, 2)
    assert store.latest_version(code)["version"] == 3
    store.current.update_one({"_id": code}, {"$set": {"version": 1}})  # as if version 3's mover died
    store.advance_current_to(code, 3)
    assert store.latest_version(code)["version"] == 3
    assert {d["item_code"]: d["version"] for d in store.listing()}[code] == 3


def test_a_version_a_dead_publisher_left_does_not_undo_a_later_withdrawal(mongo_client, db_prefix, monkeypatch):
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    store.insert_version(guide, 1, published(guide))
    with monkeypatch.context() as m:
        m.setattr(store, "_advance_current", lambda doc: (_ for _ in ()).throw(ConnectionError("died")))
        with pytest.raises(ConnectionError):
            store.insert_version(guide, 2, published(guide))
    # Before the relay's round, the admin withdraws the item as it is served (version 1).
    assert store.withdraw(withdrawal(guide, 1), withdrawn(guide, 1))
    store.advance_current_to(code, 2)
    assert "withdrawn" in store.latest_version(code)
    assert code not in [d["item_code"] for d in store.listing()]
    # The admin publishing anew ends the withdrawal, as a publish does, under the next number
    # past the one the dead publisher took (no 409 for it).
    assert store.next_version(code) == 3
    store.insert_version({**guide, "name": "高龄津贴申领（新版）"}, 3, published(guide))
    assert store.latest_version(code)["version"] == 3 and "withdrawn" not in store.latest_version(code)
    store.advance_current_to(code, 2)  # the relay's late round moves nothing back
    assert store.latest_version(code)["version"] == 3
    # A row already at the version: nothing moves, so no process is made to reload its listing
    # (the relay tries every 2 s for as long as an event waits).
    other = seed_items()[3]
    store.insert_version(other, 1, published(other))
    revision = store.meta.find_one({"_id": "revision"})["n"]
    store.advance_current_to(other["item_code"], 1)
    assert store.meta.find_one({"_id": "revision"})["n"] == revision


def test_a_publish_that_took_its_number_before_a_withdrawal_leaves_the_item_withdrawn(mongo_client, db_prefix):
    # Two admins at once: the publisher takes its number, the other withdraws the item as served,
    # then the publisher stores its version. The withdrawal stands (as if the publish came first);
    # a version numbered after the withdrawal ends it.
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    store.insert_version(guide, store.next_version(code), published(guide))
    racing = store.next_version(code)
    assert store.withdraw(withdrawal(guide, 1), withdrawn(guide, 1))
    stored, inserted = store.insert_version({**guide, "name": "高龄津贴申领（新版）"}, racing, published(guide))
    assert inserted and stored["version"] == 2 and store.get_version(code, 2)["name"] == "高龄津贴申领（新版）"
    latest = store.latest_version(code)
    assert (latest["version"], latest["withdrawn"]["reason"]) == (1, "取消")
    store.listing_changed()
    assert code not in [d["item_code"] for d in store.listing()]

    store.insert_version(guide, store.next_version(code), published(guide))
    assert store.latest_version(code)["version"] == 3 and "withdrawn" not in store.latest_version(code)


def draft_of(store: CatalogStore, guide: dict) -> dict:
    store.save_draft(guide, "admin-1")
    return store.get_draft(guide["item_code"])


def test_a_draft_published_twice_at_once_is_one_version(mongo_client, db_prefix):
    # A publish retried while its first try runs (the gateway's timeout) read the same draft.
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    first_try, retry = draft_of(store, guide), store.get_draft(code)
    number = store.draft_version(first_try)
    assert store.draft_version(retry) == number == 1  # its copy predates the claim: claimed already
    assert store.draft_version(store.get_draft(code)) == number  # read after the claim
    stored = [store.insert_version(guide, number, published(guide)) for _ in range(2)]
    assert [(doc["version"], inserted) for doc, inserted in stored] == [(1, True), (1, False)]
    assert [v["version"] for v in store.list_versions(code)] == [1]
    # One event announces it: the retry's was dropped.
    assert [e["payload"]["version"] for _, e, _ in store.outbox.pending(timedelta(0))] == [1]

    # An edit saved meanwhile is a new draft: its publish takes a new number.
    edited = draft_of(store, {**guide, "name": "高龄津贴申领（新版）"})
    assert store.draft_version(edited) == 3  # 2 was the number the retry took and left unused
    with pytest.raises(Conflict, match="edited or published meanwhile"):
        store.draft_version(first_try)  # the draft it read is no longer there
    store.mark_published(code, first_try["updated_at"])  # not the draft it published: no mark
    assert store.get_draft(code)["name"] == "高龄津贴申领（新版）"
    store.mark_published(code, edited["updated_at"])
    assert store.get_draft(code) is None  # gone for editors ...
    assert store.published_draft(code) == 3  # ... kept as what it was published as
    assert store.draft_version(edited) == 3  # a publish that read it before: the same version

    # The next draft takes the marker's place, whether created or saved.
    store.create_draft({**guide, "name": "高龄津贴申领（第三版）"}, "admin-1")
    assert store.published_draft(code) is None
    assert store.get_draft(code)["name"] == "高龄津贴申领（第三版）"
    with pytest.raises(Conflict, match="already exists"):
        store.create_draft(guide, "admin-1")  # over a draft being edited: refused


def test_a_publish_retried_after_a_withdrawal_passed_its_number_over_takes_a_new_one(mongo_client, db_prefix):
    # The first try claimed a number and died before storing; the item was then withdrawn (over
    # that number). The retry must bring the item back, not store a version the withdrawal hides.
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    store.insert_version(guide, store.next_version(code), published(guide))
    first_try = draft_of(store, {**guide, "name": "高龄津贴申领（新版）"})
    assert store.draft_version(first_try) == 2  # ... and died here
    assert store.withdraw(withdrawal(guide, 1), withdrawn(guide, 1))
    retry = store.get_draft(code)
    number = store.draft_version(retry)
    assert number == 3
    assert store.draft_version(retry) == number  # a retry of the retry (its copy still says 2)
    assert store.draft_version(store.get_draft(code)) == number
    _, inserted = store.insert_version({**guide, "name": "高龄津贴申领（新版）"}, number, published(guide))
    assert inserted
    latest = store.latest_version(code)
    assert (latest["version"], latest["name"], "withdrawn" in latest) == (3, "高龄津贴申领（新版）", False)

    # A number stored before the withdrawal is the same publish, answered again: kept.
    other = seed_items()[3]
    store.insert_version(other, store.next_version(other["item_code"]), published(other))
    done = draft_of(store, {**other, "name": "新版"})
    kept = store.draft_version(done)
    store.insert_version({**other, "name": "新版"}, kept, published(other))
    assert store.withdraw(withdrawal(other, kept), withdrawn(other, kept))
    assert store.draft_version(store.get_draft(other["item_code"])) == kept


class Commands(CommandListener):
    """Every find the client sends, with its filter (pymongo's command monitoring)."""

    def __init__(self) -> None:
        self.filters: list[dict] = []

    def started(self, event) -> None:
        if event.command_name in ("find", "findAndModify", "aggregate", "count"):
            self.filters.append(event.command.get("filter", event.command.get("query", {"pipeline": True})))

    def succeeded(self, event) -> None:
        pass

    def failed(self, event) -> None:
        pass


def test_asking_for_any_code_reads_by_id_only(db_prefix):
    # The routes are public: a filter on item_code scanned every stored version on FerretDB.
    import pymongo

    from tests.support import MONGO_URI

    commands = Commands()
    client = pymongo.MongoClient(MONGO_URI, event_listeners=[commands], tz_aware=True)
    try:
        store = CatalogStore(client[f"{db_prefix}_catalog"])
        guide = seed_items()[0]
        store.insert_version(guide, 1, published(guide))
        store.insert_version({**guide, "name": "高龄津贴申领（新版）"}, 2, published(guide))
        store.current.delete_one({"_id": guide["item_code"]})  # a publisher died before moving it
        commands.filters.clear()
        assert store.latest_version("NO-SUCH-CODE") is None and store.list_versions("NO-SUCH-CODE") == []
        assert store.latest_version(guide["item_code"])["version"] == 2
        assert [v["version"] for v in store.list_versions(guide["item_code"])] == [2, 1]
        assert commands.filters and all(list(f) == ["_id"] for f in commands.filters), commands.filters
    finally:
        client.close()


def test_two_publishes_at_once_take_two_numbers_and_a_number_never_stored_is_skipped(mongo_client, db_prefix):
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    code = guide["item_code"]
    first, second = store.next_version(code), store.next_version(code)
    assert (first, second) == (1, 2)
    store.insert_version(guide, second, published(guide))  # the first publisher died before storing
    assert store.latest_version(code)["version"] == 2
    assert [v["version"] for v in store.list_versions(code)] == [2]
    assert store.next_version(code) == 3


def test_a_store_from_before_the_numbers_were_kept_gets_them_at_start(mongo_client, db_prefix):
    store = CatalogStore(mongo_client[f"{db_prefix}_catalog"])
    guide = seed_items()[0]
    store.insert_version(guide, 1, published(guide))
    store.insert_version(guide, 2, published(guide))
    store.heads.drop()  # as stored before
    assert store.list_versions(guide["item_code"]) == []
    store.ensure_indexes()
    assert [v["version"] for v in store.list_versions(guide["item_code"])] == [2, 1]
    assert store.next_version(guide["item_code"]) == 3
