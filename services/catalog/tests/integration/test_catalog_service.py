"""Catalog against the real broker and document server."""

from __future__ import annotations

import pytest
from nameko.standalone.rpc import ServiceRpcClient

from services.catalog.seed_data import seed_items
from services.catalog.service import CatalogService
from services.common.errors import NotFound, ValidationFailed
from tests.support import event_recorder, eventually


@pytest.fixture
def recorder(container_factory, rabbit_config):
    recorder = event_recorder("catalog", "catalog.item_published.v1")
    container_factory(recorder).start()
    return recorder


@pytest.fixture
def catalog(container_factory, rabbit_config, store_config, recorder):
    container = container_factory(CatalogService, store_config)
    container.start()
    return container


def test_seed_publishes_every_starter_item_once(catalog, recorder):
    codes = {g["item_code"] for g in seed_items()}
    eventually(lambda: {e["payload"]["item_code"] for e in recorder.events} == codes, what="item_published events")
    with ServiceRpcClient("catalog") as client:
        client.seed()  # idempotent
        assert client.search_items({})["total"] == len(codes)
        found = client.search_items({"q": "津贴"})
        assert [i["item_code"] for i in found["items"]] == ["62052400MZ-GF-0001"]
        assert len(client.list_departments()) == 4


def test_versions_are_immutable_and_readable(catalog, recorder):
    guide = seed_items()[0]
    with ServiceRpcClient("catalog") as client:
        eventually(lambda: client.search_items({})["total"] >= 1)
        assert client.publish_guide({**guide, "promised_days": 3})["version"] == 2
        assert client.get_item(guide["item_code"])["promised_days"] == 3
        assert client.get_item(guide["item_code"], 1)["promised_days"] == guide["promised_days"]
        with pytest.raises(NotFound):
            client.get_item(guide["item_code"], 9)
        bad_rule = {
            **guide,
            "auto_approval": {
                "enabled": True,
                "rules": [{"id": "broken", "description": "d", "expression": "applicant.age >="}],
            },
        }
        with pytest.raises(ValidationFailed) as err:
            client.publish_guide(bad_rule)
        assert "rule broken" in err.value.details[0]["issue"]
