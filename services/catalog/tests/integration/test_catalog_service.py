"""Catalog against the real broker and document server."""

from __future__ import annotations

import pytest
from nameko.standalone.rpc import ServiceRpcClient

from services.catalog.seed_catalog import departments, seed_guides
from services.catalog.service import CatalogService
from services.common.errors import Conflict, Forbidden, NotFound, ValidationFailed
from tests.support import event_recorder, eventually

ADMIN = {"user_id": "admin-1", "account_type": "staff", "roles": ["admin"]}
APPLICANT = {"user_id": "u-1", "account_type": "citizen", "roles": ["applicant"]}
ALLOWANCE = "62052400MZ-GF-0001"


@pytest.fixture
def recorder(container_factory, rabbit_config):
    recorder = event_recorder("catalog", "catalog.item_published.v1")
    container_factory(recorder).start()
    return recorder


@pytest.fixture
def client(container_factory, rabbit_config, store_config, recorder):
    container_factory(CatalogService, store_config).start()
    with ServiceRpcClient("catalog") as client:
        eventually(
            lambda: client.search_items({"page_size": 1})["total"] == len(seed_guides()), timeout=60, what="seed"
        )
        yield client


def new_guide(**changes):
    guide = {**seed_guides()[0], "item_code": "62052400MZ-QT-0099", "name": "养老服务补贴测试事项"}
    return {**guide, **changes}


def test_seed_is_a_realistic_catalog_published_once(client, recorder):
    assert len(client.list_departments()) == len(departments()) >= 40
    assert client.search_items({})["total"] == len(seed_guides()) >= 500
    for item_type in ("licensing", "benefit", "confirmation", "levy", "other"):
        assert client.search_items({"item_type": item_type})["total"] >= 8
    for mode in ("online", "one_visit", "onsite"):
        assert client.search_items({"handling_mode": mode})["total"] >= 15
    eventually(
        lambda: len({e["payload"]["item_code"] for e in recorder.events}) == len(seed_guides()),
        timeout=30,
        what=f"item_published for every item (got {len(recorder.events)})",
    )
    assert client.seed() == 0  # idempotent: nothing new to seed


def test_a_single_character_finds_the_items_named_with_it(client):
    found = client.search_items({"q": "税", "page_size": 100})
    assert found["total"] >= 3 and all("税" in i["name"] for i in found["items"][:3])


def test_chinese_search_ranks_names_first_and_filters(client):
    found = client.search_items({"q": "高龄津贴"})
    assert found["items"][0]["item_code"] == ALLOWANCE
    by_keyword = client.search_items({"q": "老年人补贴"})
    assert ALLOWANCE in [i["item_code"] for i in by_keyword["items"][:5]]
    only_here = client.search_items({"q": "津贴", "department": "620524MZ"})
    assert only_here["total"] >= 1 and {i["department_code"] for i in only_here["items"]} == {"620524MZ"}
    page2 = client.search_items({"q": "登记", "page": 2, "page_size": 5})
    page1 = client.search_items({"q": "登记", "page": 1, "page_size": 5})
    assert page1["total"] == page2["total"] > 10
    assert not {i["item_code"] for i in page1["items"]} & {i["item_code"] for i in page2["items"]}
    assert client.search_items({"q": "xyzzyq"})["total"] == 0


def test_answers_name_the_item_and_the_section(client):
    answers = client.answer({"q": "老年人津贴多久能批下来"})["answers"]
    assert (answers[0]["name"], answers[0]["section"]) == ("高龄津贴申领", "time_limit")
    assert "5个工作日" in answers[0]["text"]
    answers = client.answer({"q": "我想办营业执照需要带什么材料"})["answers"]
    assert (answers[0]["name"], answers[0]["section"]) == ("企业设立登记", "materials")
    assert client.answer({"q": "xyz"})["answers"] == []


def test_drafts_publish_as_immutable_versions(client, recorder):
    with pytest.raises(Forbidden):
        client.create_draft(APPLICANT, new_guide())
    draft = client.create_draft(ADMIN, new_guide())
    assert draft["updated_by"] == "admin-1"
    with pytest.raises(Conflict):
        client.create_draft(ADMIN, new_guide())
    with pytest.raises(NotFound):
        client.get_item("62052400MZ-QT-0099")  # a draft is not published

    client.update_draft(ADMIN, "62052400MZ-QT-0099", new_guide(promised_days=3))
    v1 = client.publish_draft(ADMIN, "62052400MZ-QT-0099")
    assert (v1["version"], v1["promised_days"]) == (1, 3)
    with pytest.raises(NotFound):
        client.get_draft(ADMIN, "62052400MZ-QT-0099")  # consumed by publishing
    assert client.publish_draft(ADMIN, "62052400MZ-QT-0099") == v1  # a retry whose first answer was lost

    client.update_draft(ADMIN, "62052400MZ-QT-0099", new_guide(promised_days=2))
    assert client.get_item("62052400MZ-QT-0099")["promised_days"] == 3  # drafts are invisible until published
    v2 = client.publish_draft(ADMIN, "62052400MZ-QT-0099")
    assert v2["version"] == 2
    assert client.get_item("62052400MZ-QT-0099")["promised_days"] == 2
    assert client.get_item("62052400MZ-QT-0099", 1)["promised_days"] == 3
    assert [v["version"] for v in client.list_versions("62052400MZ-QT-0099")["items"]] == [2, 1]
    announced = eventually(
        lambda: [e["payload"]["version"] for e in recorder.events if e["payload"]["item_code"] == "62052400MZ-QT-0099"],
        what="item_published for both versions",
    )
    eventually(lambda: len(announced) == 2)
    assert sorted(announced) == [1, 2]
    assert client.search_items({"q": "养老服务补贴测试事项"})["items"][0]["item_code"] == "62052400MZ-QT-0099"


def test_a_form_schema_in_full_json_schema_is_kept_as_written(client):
    # "$schema", "$defs", "$ref" and a dotted property name: field names the store refuses.
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "type": "object",
        "$defs": {"phone": {"type": "string", "pattern": "^1[3-9][0-9]{9}$"}},
        "properties": {
            "contact": {"$ref": "#/$defs/phone"},
            "no.of.children": {"type": "integer"},
            "range": {"enum": [[0, 1], [1, 2]]},  # arrays of arrays: the stand-in cannot store them
        },
        "required": ["contact"],
    }
    code = "62052400MZ-QT-0098"
    draft = client.create_draft(ADMIN, new_guide(item_code=code, form_schema=schema))
    assert draft["form_schema"] == schema
    assert client.get_draft(ADMIN, code)["form_schema"] == schema
    client.update_draft(ADMIN, code, new_guide(item_code=code, form_schema=schema, promised_days=1))
    assert client.publish_draft(ADMIN, code)["form_schema"] == schema
    assert client.get_item(code)["form_schema"] == schema
    assert client.get_item(code, 1)["form_schema"] == schema


def test_a_guide_read_back_may_be_sent_as_the_next_draft(client):
    # GET, change, PUT: what reading answers besides the guide (version, updated_*) is ignored.
    code = "62052400MZ-QT-0097"
    client.create_draft(ADMIN, new_guide(item_code=code))
    published = client.publish_draft(ADMIN, code)
    draft = client.update_draft(ADMIN, code, {**published, "promised_days": 1})
    assert draft["promised_days"] == 1 and "version" not in draft
    assert client.update_draft(ADMIN, code, {**draft, "promised_days": 2})["promised_days"] == 2
    assert client.publish_draft(ADMIN, code)["version"] == 2


def test_invalid_guides_are_refused_with_field_details(client):
    broken_rule = new_guide(
        auto_approval={"enabled": True, "rules": [{"id": "age", "description": "d", "expression": "applicant.age >"}]}
    )
    with pytest.raises(ValidationFailed) as err:
        client.create_draft(ADMIN, broken_rule)
    assert err.value.details[0]["field"] == "auto_approval.rules.0.expression"
    assert "rule age" in err.value.details[0]["issue"]

    with pytest.raises(ValidationFailed) as err:
        client.create_draft(ADMIN, new_guide(form_schema={"type": "nonsense"}))
    assert err.value.details[0]["field"] == "form_schema"

    with pytest.raises(ValidationFailed) as err:
        client.create_draft(ADMIN, new_guide(item_code="MZ-0001"))
    assert err.value.details[0]["field"] == "item_code"

    with pytest.raises(ValidationFailed) as err:
        client.create_draft(ADMIN, new_guide(department_code="999999XX"))
    assert err.value.details[0]["field"] == "department_code"

    with pytest.raises(ValidationFailed) as err:
        client.update_draft(ADMIN, ALLOWANCE, new_guide())  # body code differs from the path
    assert err.value.details[0]["field"] == "item_code"
    with pytest.raises(Conflict):
        client.create_draft(ADMIN, {**seed_guides()[0]})  # already published: PUT a new version instead


def test_a_withdrawn_item_leaves_search_and_returns_with_its_next_version(client, container_factory):
    withdrawals = event_recorder("catalog", "catalog.item_withdrawn.v1")
    container_factory(withdrawals).start()
    code = "62052400MZ-QT-0097"
    client.create_draft(ADMIN, new_guide(item_code=code, name="临时救助金测试事项"))
    client.publish_draft(ADMIN, code)
    assert client.search_items({"q": "临时救助金测试事项"})["items"][0]["item_code"] == code

    with pytest.raises(Forbidden):
        client.withdraw_item(APPLICANT, code, {"reason": "事项已取消"})
    withdrawal = client.withdraw_item(ADMIN, code, {"reason": "事项已取消"})
    assert (withdrawal["version"], withdrawal["reason"], withdrawal["withdrawn_by"]) == (1, "事项已取消", "admin-1")
    with pytest.raises(NotFound, match="事项已取消"):
        client.get_item(code)
    assert code not in [i["item_code"] for i in client.search_items({"q": "临时救助金测试事项"})["items"]]
    assert client.get_item(code, 1)["version"] == 1  # cases submitted under it still read it
    assert [v["version"] for v in client.list_versions(code)["items"]] == [1]
    with pytest.raises(Conflict):
        client.withdraw_item(ADMIN, code, {"reason": "again"})
    with pytest.raises(NotFound):
        client.withdraw_item(ADMIN, "62052400MZ-QT-0096", {"reason": "never published"})
    with pytest.raises(NotFound):
        client.publish_draft(ADMIN, code)  # its draft's version is withdrawn: nothing to answer again
    announced = eventually(lambda: [e["payload"] for e in withdrawals.events], what="item_withdrawn")
    assert announced == [{"item_code": code, "version": 1, "department_code": new_guide()["department_code"]}]

    client.update_draft(ADMIN, code, new_guide(item_code=code, name="临时救助金测试事项"))
    assert client.publish_draft(ADMIN, code)["version"] == 2
    assert client.get_item(code)["version"] == 2
    assert client.search_items({"q": "临时救助金测试事项"})["items"][0]["item_code"] == code
