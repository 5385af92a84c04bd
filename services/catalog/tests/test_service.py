from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory

from contracts.catalog import PublishedItem
from contracts.envelope import Envelope
from services.catalog.seed_data import DEPARTMENTS, seed_items
from services.catalog.service import CatalogService
from services.common.errors import NotFound, ValidationFailed

GUIDE = seed_items()[0]
CODE = GUIDE["item_code"]


def stored_version(version, **overrides):
    """A version document as the store keeps it (with storage-only fields)."""
    return {
        **GUIDE,
        **overrides,
        "_id": f"{CODE}@{version}",
        "version": version,
        "published_at": "2026-11-01T00:00:00Z",
        "outbox_ids": [],
        "outbox": {},
    }


@pytest.fixture
def store():
    store = MagicMock()
    store.latest_version.return_value = None
    store.get_version.return_value = None
    store.search.return_value = ([], 0)
    return store


@pytest.fixture
def events():
    return MagicMock()


@pytest.fixture
def service(store, events):
    return worker_factory(CatalogService, store=store, events=events)


def test_get_latest_item(service, store):
    store.latest_version.return_value = stored_version(2)
    result = service.get_item(CODE)
    store.latest_version.assert_called_once_with(CODE)
    store.get_version.assert_not_called()
    item = PublishedItem.model_validate(result)
    assert item.version == 2
    assert "_id" not in result and "outbox" not in result and "published_at" not in result


def test_get_a_given_version(service, store):
    store.get_version.return_value = stored_version(1, name="高龄津贴申领（旧）")
    result = service.get_item(CODE, 1)
    store.get_version.assert_called_once_with(CODE, 1)
    store.latest_version.assert_not_called()
    assert result["version"] == 1
    assert result["name"] == "高龄津贴申领（旧）"


@pytest.mark.parametrize("version", [None, 7])
def test_unknown_item_is_not_found(service, version):
    with pytest.raises(NotFound):
        service.get_item("62052400MZ-GF-9999", version)


def test_publish_first_version_and_announce_it(service, store, events):
    result = service.publish_guide(GUIDE)
    assert result == {"item_code": CODE, "version": 1}
    guide, version, event = store.insert_version.call_args.args
    assert version == 1
    assert guide["item_code"] == CODE
    assert isinstance(event, Envelope)
    assert event.type == "catalog.item_published.v1"
    assert event.producer == "catalog"
    assert event.payload == {"item_code": CODE, "version": 1, "department_code": GUIDE["department_code"]}
    events.publish.assert_called_once_with(store.outbox, f"{CODE}@1", [event])


def test_publish_next_version(service, store):
    store.latest_version.return_value = stored_version(4)
    assert service.publish_guide(GUIDE)["version"] == 5
    assert store.insert_version.call_args.args[1] == 5


def test_invalid_guide_is_not_published(service, store, events):
    bad = {**GUIDE, "auto_approval": {"enabled": True, "rules": [{"id": "x", "description": "d", "expression": "(("}]}}
    with pytest.raises(ValidationFailed) as info:
        service.publish_guide(bad)
    assert [d["field"] for d in info.value.details] == ["auto_approval.rules.0.expression"]
    store.insert_version.assert_not_called()
    events.publish.assert_not_called()


def test_guide_promising_more_than_the_law_allows_is_refused(service, store):
    with pytest.raises(ValidationFailed):
        service.publish_guide({**GUIDE, "promised_days": 30, "legal_days": 20})
    store.insert_version.assert_not_called()


def test_search_items_pages_and_filters(service, store):
    store.search.return_value = ([stored_version(3)], 11)
    result = service.search_items({"q": "津贴", "department": "620524MZ", "page": "2", "page_size": "5"})
    store.search.assert_called_once_with(
        {"q": "津贴", "department_code": "620524MZ", "item_type": None, "handling_mode": None}, skip=5, limit=5
    )
    assert result["total"] == 11
    assert result["page"] == 2
    assert result["items"] == [
        {
            "item_code": CODE,
            "name": "高龄津贴申领",
            "department_code": "620524MZ",
            "item_type": "benefit",
            "handling_mode": "online",
            "promised_days": 5,
        }
    ]


@pytest.mark.parametrize("query", [{"page_size": 500}, {"item_type": "bribery"}, {"page": 0}, {"sort": "x"}])
def test_search_refuses_bad_queries(service, store, query):
    with pytest.raises(ValidationFailed):
        service.search_items(query)
    store.search.assert_not_called()


def test_list_departments(service, store):
    store.list_departments.return_value = DEPARTMENTS
    assert service.list_departments() == DEPARTMENTS


def test_seed_publishes_only_missing_items(service, store):
    existing = seed_items()[1]["item_code"]
    store.latest_version.side_effect = lambda code: stored_version(1) if code == existing else None
    service.seed()
    assert store.upsert_department.call_count == len(DEPARTMENTS)
    published = [c.args[0]["item_code"] for c in store.insert_version.call_args_list]
    assert existing not in published
    assert sorted(published) == sorted(i["item_code"] for i in seed_items() if i["item_code"] != existing)


def test_every_seed_item_is_a_valid_guide(service, store):
    for guide in seed_items():
        service.publish_guide(guide)
    assert store.insert_version.call_count == len(seed_items())


def _rpc_method_names(service_cls):
    from nameko.extensions import ENTRYPOINT_EXTENSIONS_ATTR
    from nameko.rpc import Rpc

    return [
        name
        for name in dir(service_cls)
        if any(isinstance(e, Rpc) for e in getattr(getattr(service_cls, name), ENTRYPOINT_EXTENSIONS_ATTR, ()))
    ]


def test_every_rpc_method_is_reachable_through_the_rpc_client():
    """A method named like an attribute of nameko's client (e.g. `publish`) could never be called."""
    from nameko.rpc import Client

    from services.approval.service import ApprovalService
    from services.identity.service import IdentityService
    from services.intake.service import IntakeService
    from services.notification.service import NotificationService

    for service_cls in (CatalogService, IdentityService, IntakeService, ApprovalService, NotificationService):
        names = _rpc_method_names(service_cls)
        assert names, service_cls
        client = Client(None, None, {}, service_cls.name)
        for name in names:
            target = getattr(client, name)
            assert isinstance(target, Client) and target.method_name == name, f"{service_cls.name}.{name}"
