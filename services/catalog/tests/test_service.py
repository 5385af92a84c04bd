import copy
from datetime import UTC, datetime
from unittest.mock import MagicMock

import pytest
from nameko.testing.services import worker_factory
from pydantic import ValidationError

from contracts.catalog import Draft, PublishedItem, ServiceGuide
from contracts.envelope import Envelope
from services.catalog import search
from services.catalog.seed_catalog import departments, seed_fingerprint, seed_guides
from services.catalog.seed_data import DEPARTMENTS, seed_items
from services.catalog.service import SEED_BATCH, CatalogService
from services.catalog.storage import version_id
from services.common.errors import Conflict, Forbidden, NotFound, ValidationFailed

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


def inserted_version(guide, version, event):
    """What the store's insert_version returns: the stored version document, stored by this call."""
    return {
        **guide,
        "_id": f"{guide['item_code']}@{version}",
        "version": version,
        "published_at": "2026-11-01T00:00:00Z",
    }, True


@pytest.fixture
def store():
    store = MagicMock()
    store.latest_version.return_value = None
    store.get_version.return_value = None
    store.get_draft.return_value = None
    store.published_draft.return_value = None
    store.department_exists.return_value = True
    store.insert_version.side_effect = inserted_version
    # The store's number follows its newest version: here, what latest_version is given to say.
    store.next_version.side_effect = lambda code: ((store.latest_version(code) or {}).get("version") or 0) + 1
    store.filtered.return_value = ([], 0)
    store.candidates.return_value = []
    store.seeded.return_value = False
    store.existing_codes.return_value = set()
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


def test_version_zero_is_not_the_latest(service, store):
    store.latest_version.return_value = stored_version(2)
    store.get_version.return_value = None  # versions start at 1
    with pytest.raises(NotFound, match="version 0"):
        service.get_item(CODE, 0)
    store.get_version.assert_called_once_with(CODE, 0)
    store.latest_version.assert_not_called()


def test_publish_first_version_and_announce_it(service, store, events):
    result = service.publish_guide(GUIDE)
    assert result == PublishedItem.model_validate({**GUIDE, "version": 1}).model_dump(mode="json")
    assert "_id" not in result and "published_at" not in result
    store.department_exists.assert_called_once_with(GUIDE["department_code"])
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


def test_a_guide_of_an_unknown_department_is_not_published(service, store, events):
    store.department_exists.return_value = False
    with pytest.raises(ValidationFailed) as info:
        service.publish_guide(GUIDE)
    assert [d["field"] for d in info.value.details] == ["department_code"]
    store.insert_version.assert_not_called()
    events.publish.assert_not_called()


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


def current_row(guide, version=1):
    """An items_current row as the store keeps it: summary fields, the version and search tokens."""
    fields = ("item_code", "name", "department_code", "item_type", "handling_mode", "promised_days")
    return {
        "_id": guide["item_code"],
        **{k: guide[k] for k in fields},
        "version": version,
        **search.index_fields(guide),
    }


SUMMARY = {
    "item_code": CODE,
    "name": "高龄津贴申领",
    "department_code": "620524MZ",
    "item_type": "benefit",
    "handling_mode": "online",
    "promised_days": 5,
}


def test_search_without_words_pages_and_filters_in_the_store(service, store):
    store.filtered.return_value = ([current_row(GUIDE, 3)], 11)
    result = service.search_items({"department": "620524MZ", "item_type": "benefit", "page": "2", "page_size": "5"})
    store.filtered.assert_called_once_with({"department_code": "620524MZ", "item_type": "benefit"}, 5, 5)
    store.candidates.assert_not_called()
    assert result["total"] == 11
    assert result["page"] == 2
    assert result["page_size"] == 5
    assert result["items"] == [SUMMARY]


@pytest.mark.parametrize("q", [None, "", "   "])
def test_blank_words_are_no_search(service, store, q):
    service.search_items({} if q is None else {"q": q})
    store.filtered.assert_called_once_with({}, 0, 20)
    store.candidates.assert_not_called()


def test_search_with_words_ranks_the_candidates(service, store):
    rows = [current_row(g) for g in seed_items()]
    store.candidates.return_value = rows
    result = service.search_items({"q": "企业名称", "handling_mode": "online"})
    store.candidates.assert_called_once_with(search.tokenize("企业名称"), {"handling_mode": "online"})
    store.filtered.assert_not_called()
    expected = [doc["item_code"] for _, doc in search.rank("企业名称", rows)]
    assert [i["item_code"] for i in result["items"]] == expected
    assert expected[0] == "62052400SC-XK-0001"  # 企业名称自主申报: the words are its name
    assert result["total"] == len(expected) < len(rows)  # candidates that do not match are dropped
    assert set(result["items"][0]) == set(SUMMARY)


def test_ranked_results_are_paged(service, store):
    rows = [current_row(g) for g in seed_guides() if g["department_code"].endswith("SC")]
    store.candidates.return_value = rows
    everything = [doc["item_code"] for _, doc in search.rank("企业登记", rows)]
    assert len(everything) > 6
    first = service.search_items({"q": "企业登记", "page": 1, "page_size": 3})
    second = service.search_items({"q": "企业登记", "page": 2, "page_size": 3})
    last_page = (len(everything) + 2) // 3
    beyond = service.search_items({"q": "企业登记", "page": last_page + 1, "page_size": 3})
    assert [i["item_code"] for i in first["items"]] == everything[:3]
    assert [i["item_code"] for i in second["items"]] == everything[3:6]
    assert first["total"] == second["total"] == beyond["total"] == len(everything)
    assert beyond["items"] == []


def _listed(code, name, keywords=()):
    return {
        "item_code": code,
        "name": name,
        "keywords": list(keywords),
        "department_code": "620524SW",
        "item_type": "levy",
        "handling_mode": "online",
        "promised_days": 1,
    }


def test_a_question_with_nothing_to_search_by_finds_names_and_keywords_holding_it(service, store):
    # One character (税) or only common words: no token, so the names and keywords are read.
    store.matching.return_value = [
        _listed("62052400SW-ZS-0002", "契税申报"),
        _listed("62052400SW-ZS-0001", "个人所得税申报"),
        _listed("62052400SW-QT-0003", "发票领用", keywords=["税控"]),
        _listed("62052400MZ-GF-0001", "高龄津贴申领"),
    ]
    result = service.search_items({"q": "税", "department": "620524SW", "page_size": 2})
    store.matching.assert_called_once_with({"department_code": "620524SW"})
    store.candidates.assert_not_called()
    assert result["total"] == 3
    assert [i["item_code"] for i in result["items"]] == ["62052400SW-ZS-0001", "62052400SW-ZS-0002"]
    page_two = service.search_items({"q": "税", "department": "620524SW", "page_size": 2, "page": 2})
    assert [i["item_code"] for i in page_two["items"]] == ["62052400SW-QT-0003"]  # by keyword, after names
    assert service.search_items({"q": "我想办"})["total"] == 0  # only stopwords, in no name


@pytest.mark.parametrize("query", [{"page_size": 500}, {"item_type": "bribery"}, {"page": 0}, {"sort": "x"}])
def test_search_refuses_bad_queries(service, store, query):
    with pytest.raises(ValidationFailed) as info:
        service.search_items(query)
    assert all(d["field"].startswith("query.") for d in info.value.details)
    store.filtered.assert_not_called()
    store.candidates.assert_not_called()


def test_answer_ranks_guides_for_a_question(service, store):
    store.candidates.return_value = [{**current_row(g), "guide": g} for g in seed_items()]
    result = service.answer({"q": "高龄津贴多久能批下来", "limit": 2})
    store.candidates.assert_called_once_with(search.tokenize("高龄津贴多久能批下来"), {})
    assert 1 <= len(result["answers"]) <= 2
    assert (result["answers"][0]["item_code"], result["answers"][0]["section"]) == (CODE, "time_limit")


@pytest.mark.parametrize("query", [{}, {"q": ""}, {"q": "x" * 201}, {"q": "津贴", "limit": 21}])
def test_answer_refuses_bad_questions(service, store, query):
    with pytest.raises(ValidationFailed):
        service.answer(query)
    store.candidates.assert_not_called()


def test_list_versions_newest_first(service, store):
    store.list_versions.return_value = [
        {
            "_id": f"{CODE}@2",
            "item_code": CODE,
            "version": 2,
            "name": "高龄津贴申领",
            "published_at": "2026-11-02T00:00:00Z",
        },
        {
            "_id": f"{CODE}@1",
            "item_code": CODE,
            "version": 1,
            "name": "高龄津贴",
            "published_at": "2026-11-01T00:00:00Z",
        },
    ]
    result = service.list_versions(CODE)
    store.list_versions.assert_called_once_with(CODE)
    assert result == {
        "items": [
            {"item_code": CODE, "version": 2, "name": "高龄津贴申领", "published_at": "2026-11-02T00:00:00Z"},
            {"item_code": CODE, "version": 1, "name": "高龄津贴", "published_at": "2026-11-01T00:00:00Z"},
        ]
    }


def test_versions_of_an_unknown_item(service, store):
    store.list_versions.return_value = []
    with pytest.raises(NotFound):
        service.list_versions("62052400MZ-GF-9999")


def test_list_departments_answers_what_the_contract_validates(service, store):
    store.list_departments.return_value = DEPARTMENTS
    assert service.list_departments() == [
        {"code": d["code"], "name": d["name"], "region_code": d["region_code"]} for d in DEPARTMENTS
    ]
    # A record the contract would not pass is not answered as if it were a department.
    store.list_departments.return_value = [{"code": "620524MZ", "name": "民政局"}]  # no region_code
    with pytest.raises(ValidationError):
        service.list_departments()


def test_seed_is_skipped_when_this_seed_was_applied(service, store, events):
    store.seeded.return_value = True
    assert service.seed() == 0
    store.seeded.assert_called_once_with(seed_fingerprint())
    store.upsert_department.assert_not_called()
    store.insert_versions.assert_not_called()
    events.publish_all.assert_not_called()
    store.mark_seeded.assert_not_called()


def test_seed_bulk_publishes_only_missing_items(service, store, events):
    calls = []
    store.insert_versions.side_effect = lambda guides, evs: calls.append(("insert", [g["item_code"] for g in guides]))
    events.publish_all.side_effect = lambda outbox, pending: calls.append(("publish", [d for d, _ in pending]))
    store.mark_seeded.side_effect = lambda fingerprint: calls.append(("mark", fingerprint))
    existing = {seed_items()[1]["item_code"], seed_guides()[-1]["item_code"]}
    store.existing_codes.return_value = existing
    fresh = [g for g in seed_guides() if g["item_code"] not in existing]

    assert service.seed() == len(fresh)

    assert [c.args[0]["code"] for c in store.upsert_department.call_args_list] == [d["code"] for d in departments()]
    inserted = [code for kind, codes in calls if kind == "insert" for code in codes]
    assert inserted == [g["item_code"] for g in fresh]
    assert all(len(codes) <= SEED_BATCH for kind, codes in calls if kind != "mark")
    assert store.insert_versions.call_count == -(-len(fresh) // SEED_BATCH)
    # Each batch is stored (with its events), then published in bulk; the seed is marked last.
    kinds = [kind for kind, _ in calls]
    assert kinds == ["insert", "publish"] * store.insert_versions.call_count + ["mark"]
    assert calls[-1] == ("mark", seed_fingerprint())
    for (_, stored), (_, published) in zip(calls[0:-1:2], calls[1:-1:2], strict=True):
        assert published == [version_id(code, 1) for code in stored]


def test_seed_events_announce_first_versions(service, store, events):
    service.seed()
    guides, evs = store.insert_versions.call_args_list[0].args
    outbox, pending = events.publish_all.call_args_list[0].args
    assert outbox is store.outbox
    assert [e for _, e in pending] == evs
    for guide, event in zip(guides, evs, strict=True):
        assert isinstance(event, Envelope)
        assert event.type == "catalog.item_published.v1"
        assert event.producer == "catalog"
        assert event.payload == {
            "item_code": guide["item_code"],
            "version": 1,
            "department_code": guide["department_code"],
        }
    assert len({e.event_id for e in evs}) == len(evs)


def test_a_failed_bulk_publish_leaves_the_seed_unmarked(service, store, events):
    events.publish_all.side_effect = ConnectionError("broker gone")
    with pytest.raises(ConnectionError):
        service.seed()
    store.mark_seeded.assert_not_called()  # the next run finishes the job; the relay sends what is stored


def test_a_seed_that_failed_part_way_is_taken_up_again_within_moments(service, store, events):
    store.seeded.return_value = False  # the first seed failed before it was marked
    store.existing_codes.return_value = set()
    service.seed_until_done()
    store.mark_seeded.assert_called_once_with(seed_fingerprint())
    store.reset_mock()
    store.seeded.return_value = True  # in: the timer only asks
    service.seed_until_done()
    store.insert_versions.assert_not_called()
    store.upsert_department.assert_not_called()


def test_the_retry_leaves_a_seed_running_in_this_process_alone(service, store):
    from services.catalog import service as catalog_service

    store.seeded.return_value = False
    with catalog_service._seeding:
        service.seed_until_done()
    store.insert_versions.assert_not_called()


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


def test_publishing_over_rpc_takes_an_admin():
    # publish_guide asks for no principal: anything on the broker could have published with it.
    assert "publish_guide" not in _rpc_method_names(CatalogService)
    assert "publish_draft" in _rpc_method_names(CatalogService)


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


# --- drafts (admins) ------------------------------------------------------------------------------

ADMIN = {"user_id": "a1", "account_type": "staff", "roles": ["admin"]}
NOT_ADMINS = [
    {"user_id": "u1", "account_type": "citizen", "roles": ["applicant"]},
    {"user_id": "r1", "account_type": "staff", "roles": ["reviewer"], "department_code": "620524MZ"},
    {"user_id": "s1", "account_type": "staff", "roles": ["supervisor"]},
]
NEW_CODE = "62052400MZ-QT-0099"
NEW_GUIDE = {**GUIDE, "item_code": NEW_CODE, "name": "养老服务补贴测试事项"}
EDITED = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)


@pytest.fixture
def drafts(store):
    """The store's drafts collection, kept in a dict."""
    held = {}

    def create(guide, by, request_key=None):
        if guide["item_code"] in held:
            raise Conflict(f"a draft of {guide['item_code']} already exists; edit it with PUT")
        held[guide["item_code"]] = {**guide, "_id": guide["item_code"], "updated_at": EDITED, "updated_by": by}
        if request_key is not None:
            held[guide["item_code"]]["request_key"] = request_key

    def save(guide, by):
        held[guide["item_code"]] = {**guide, "_id": guide["item_code"], "updated_at": EDITED, "updated_by": by}

    store.create_draft.side_effect = create
    store.save_draft.side_effect = save

    def live(code):
        return None if "published_at" in held.get(code, {"published_at": None}) else copy.deepcopy(held[code])

    def claim(draft):
        held[draft["_id"]].setdefault("publishing_as", draft.get("publishing_as") or store.next_version(draft["_id"]))
        return held[draft["_id"]]["publishing_as"]

    def mark(code, updated_at):
        if held[code]["updated_at"] == updated_at:
            held[code]["published_at"] = EDITED

    def published_as(code):
        return held[code]["publishing_as"] if code in held and live(code) is None else None

    store.get_draft.side_effect = live
    store.published_draft.side_effect = published_as
    store.mark_published.side_effect = mark
    store.draft_version.side_effect = claim
    return held


def test_admin_creates_a_draft(service, store, drafts, events):
    result = service.create_draft(ADMIN, NEW_GUIDE)
    guide, by, _ = store.create_draft.call_args.args
    assert guide == ServiceGuide.model_validate(NEW_GUIDE).model_dump(mode="json")
    assert by == "a1"
    draft = Draft.model_validate(result)
    assert draft.item_code == NEW_CODE
    assert draft.updated_by == "a1"
    assert result["updated_at"] == "2026-11-23T02:00:00Z"
    assert "_id" not in result and "version" not in result
    store.insert_version.assert_not_called()  # a draft is not published
    events.publish.assert_not_called()


@pytest.mark.parametrize("who", NOT_ADMINS, ids=["applicant", "reviewer", "supervisor"])
def test_only_admins_touch_drafts(service, store, drafts, events, who):
    drafts[CODE] = {**GUIDE, "_id": CODE, "updated_at": EDITED, "updated_by": "a1"}
    with pytest.raises(Forbidden):
        service.create_draft(who, NEW_GUIDE)
    with pytest.raises(Forbidden):
        service.update_draft(who, CODE, GUIDE)
    with pytest.raises(Forbidden):
        service.get_draft(who, CODE)
    with pytest.raises(Forbidden):
        service.publish_draft(who, CODE)
    store.create_draft.assert_not_called()
    store.save_draft.assert_not_called()
    store.insert_version.assert_not_called()
    store.mark_published.assert_not_called()
    events.publish.assert_not_called()


def test_a_draft_of_a_published_item_is_not_created_but_edited(service, store, drafts):
    store.latest_version.side_effect = lambda code: stored_version(1) if code == CODE else None
    with pytest.raises(Conflict):
        service.create_draft(ADMIN, GUIDE)
    store.create_draft.assert_not_called()
    result = service.update_draft(ADMIN, CODE, {**GUIDE, "promised_days": 3})
    assert result["promised_days"] == 3
    assert drafts[CODE]["promised_days"] == 3


def test_a_draft_creation_delivered_again_answers_its_draft_and_another_is_a_conflict(service, drafts):
    # Its reply lost as the broker went away, the same request came again: before, a 409.
    first = service.create_draft(ADMIN, NEW_GUIDE, "gateway:d-1")
    assert service.create_draft(ADMIN, NEW_GUIDE, "gateway:d-1") == first
    with pytest.raises(Conflict):
        service.create_draft(ADMIN, NEW_GUIDE, "gateway:d-2")


def test_a_second_draft_of_the_same_item_is_a_conflict(service, drafts):
    service.create_draft(ADMIN, NEW_GUIDE)
    with pytest.raises(Conflict):
        service.create_draft(ADMIN, {**NEW_GUIDE, "promised_days": 2})
    assert drafts[NEW_CODE]["promised_days"] == NEW_GUIDE["promised_days"]


def test_an_invalid_draft_is_refused_with_field_details(service, store, drafts):
    bad = {
        **NEW_GUIDE,
        "auto_approval": {"enabled": True, "rules": [{"id": "a", "description": "d", "expression": "(("}]},
    }
    with pytest.raises(ValidationFailed) as info:
        service.create_draft(ADMIN, bad)
    assert [d["field"] for d in info.value.details] == ["auto_approval.rules.0.expression"]
    with pytest.raises(ValidationFailed):
        service.create_draft(ADMIN, {**NEW_GUIDE, "promised_days": 99, "legal_days": 20})
    store.create_draft.assert_not_called()


def test_a_draft_of_an_unknown_department_is_refused(service, store, drafts):
    store.department_exists.side_effect = lambda code: code != "620524XX"
    with pytest.raises(ValidationFailed) as info:
        service.create_draft(ADMIN, {**NEW_GUIDE, "department_code": "620524XX"})
    assert info.value.details == [{"field": "department_code", "issue": "no department 620524XX"}]
    drafts[NEW_CODE] = {**NEW_GUIDE, "_id": NEW_CODE, "updated_at": EDITED, "updated_by": "a1"}
    with pytest.raises(ValidationFailed):
        service.update_draft(ADMIN, NEW_CODE, {**NEW_GUIDE, "department_code": "620524XX"})
    store.create_draft.assert_not_called()
    store.save_draft.assert_not_called()


def test_update_saves_the_draft(service, store, drafts):
    service.create_draft(ADMIN, NEW_GUIDE)
    result = service.update_draft({**ADMIN, "user_id": "a2"}, NEW_CODE, {**NEW_GUIDE, "name": "养老服务补贴"})
    assert result["name"] == "养老服务补贴"
    assert result["updated_by"] == "a2"
    store.save_draft.assert_called_once()


def test_the_item_code_in_the_body_must_match_the_path(service, store, drafts):
    drafts[NEW_CODE] = {**NEW_GUIDE, "_id": NEW_CODE, "updated_at": EDITED, "updated_by": "a1"}
    with pytest.raises(ValidationFailed) as info:
        service.update_draft(ADMIN, NEW_CODE, {**NEW_GUIDE, "item_code": "62052400MZ-QT-0098"})
    assert [d["field"] for d in info.value.details] == ["item_code"]
    assert NEW_CODE in info.value.details[0]["issue"]
    store.save_draft.assert_not_called()


def test_updating_an_item_that_does_not_exist_is_not_found(service, store, drafts):
    with pytest.raises(NotFound):
        service.update_draft(ADMIN, NEW_CODE, NEW_GUIDE)
    store.save_draft.assert_not_called()


def test_get_draft(service, drafts):
    with pytest.raises(NotFound):
        service.get_draft(ADMIN, NEW_CODE)
    service.create_draft(ADMIN, NEW_GUIDE)
    assert service.get_draft(ADMIN, NEW_CODE)["name"] == "养老服务补贴测试事项"


def test_publishing_a_draft_makes_it_the_next_version_and_ends_it(service, store, drafts, events):
    store.latest_version.side_effect = lambda code: stored_version(2) if code == CODE else None
    service.update_draft(ADMIN, CODE, {**GUIDE, "promised_days": 3})

    result = service.publish_draft(ADMIN, CODE)

    assert result == PublishedItem.model_validate({**GUIDE, "promised_days": 3, "version": 3}).model_dump(mode="json")
    guide, version, event = store.insert_version.call_args.args
    assert (guide["promised_days"], version) == (3, 3)
    assert "updated_at" not in guide and "updated_by" not in guide and "_id" not in guide
    assert event.type == "catalog.item_published.v1"
    events.publish.assert_called_once_with(store.outbox, f"{CODE}@3", [event])
    store.mark_published.assert_called_once_with(CODE, EDITED)  # only the draft that was published
    with pytest.raises(NotFound):
        service.get_draft(ADMIN, CODE)


def test_a_draft_is_published_as_the_number_it_took_first(service, store, drafts):
    # A retry of a publish whose first try is still running (or died) stores the same version.
    service.create_draft(ADMIN, NEW_GUIDE)
    drafts[NEW_CODE]["publishing_as"] = 4
    assert service.publish_draft(ADMIN, NEW_CODE)["version"] == 4
    assert store.insert_version.call_args.args[1] == 4
    store.next_version.assert_not_called()


def test_a_retried_publish_whose_version_is_stored_sends_no_second_event(service, store, drafts, events):
    # The first try stored the version with its own event (published, or left to the relay); the
    # retry's event, dropped by the store, must not go out as a second announcement.
    service.create_draft(ADMIN, NEW_GUIDE)
    drafts[NEW_CODE]["publishing_as"] = 4
    store.insert_version.side_effect = lambda guide, version, event: (inserted_version(guide, version, event)[0], False)
    assert service.publish_draft(ADMIN, NEW_CODE)["version"] == 4
    events.publish.assert_not_called()
    assert "published_at" in drafts[NEW_CODE]


def test_publishing_a_new_items_draft_makes_version_one(service, store, drafts):
    service.create_draft(ADMIN, NEW_GUIDE)
    assert service.publish_draft(ADMIN, NEW_CODE)["version"] == 1


def test_a_publish_retried_after_it_completed_answers_the_same_version(service, store, drafts, events):
    # The first answer was lost (a gateway timeout): the retry finds no draft, and must neither
    # publish again nor answer 404 for a publish that happened.
    service.create_draft(ADMIN, NEW_GUIDE)
    first = service.publish_draft(ADMIN, NEW_CODE)
    store.latest_version.side_effect = lambda code: stored_version(1, item_code=NEW_CODE, name=NEW_GUIDE["name"])
    events.publish.reset_mock()
    store.insert_version.reset_mock()

    assert service.publish_draft(ADMIN, NEW_CODE) == first
    store.insert_version.assert_not_called()
    events.publish.assert_not_called()
    with pytest.raises(NotFound):
        service.get_draft(ADMIN, NEW_CODE)  # published: no draft to edit


@pytest.mark.parametrize(
    "latest", [stored_version(2), {**stored_version(1), "withdrawn": {"reason": "x"}}], ids=["newer", "withdrawn"]
)
def test_a_publish_of_a_draft_published_before_the_item_changed_is_not_found(service, store, drafts, latest):
    # Not a retry's answer to give: the version that draft made is no longer what applicants see.
    service.create_draft(ADMIN, GUIDE)
    service.publish_draft(ADMIN, CODE)
    store.latest_version.side_effect = lambda code: latest
    with pytest.raises(NotFound):
        service.publish_draft(ADMIN, CODE)


def test_publishing_without_a_draft_is_not_found(service, store, events):
    with pytest.raises(NotFound):
        service.publish_draft(ADMIN, CODE)
    store.insert_version.assert_not_called()
    events.publish.assert_not_called()


def test_a_draft_that_no_longer_validates_is_not_published_and_kept(service, store, drafts, events):
    service.create_draft(ADMIN, NEW_GUIDE)
    store.department_exists.return_value = False  # the department was removed meanwhile
    with pytest.raises(ValidationFailed):
        service.publish_draft(ADMIN, NEW_CODE)
    store.insert_version.assert_not_called()
    store.mark_published.assert_not_called()
    assert NEW_CODE in drafts


def test_a_draft_whose_version_was_published_concurrently_is_kept(service, store, drafts, events):
    service.create_draft(ADMIN, NEW_GUIDE)
    store.insert_version.side_effect = Conflict("version 1 was published concurrently")
    with pytest.raises(Conflict):
        service.publish_draft(ADMIN, NEW_CODE)
    store.mark_published.assert_not_called()
    events.publish.assert_not_called()


# --- withdrawal -----------------------------------------------------------------------------------
WITHDRAWN = {
    "version": 2,
    "reason": "事项已取消（国务院决定）",
    "withdrawn_at": datetime(2026, 11, 20, 2, 0),  # as pymongo returns it: naive UTC
    "withdrawn_by": "admin-1",
}


def test_admin_withdraws_the_current_version_and_announces_it(service, store, events):
    store.latest_version.return_value = stored_version(2)
    store.withdraw.return_value = True
    result = service.withdraw_item(ADMIN, CODE, {"reason": "  事项已取消（国务院决定）  "})
    withdrawal, event = store.withdraw.call_args.args
    assert withdrawal["item_code"] == CODE and withdrawal["version"] == 2
    assert withdrawal["reason"] == "事项已取消（国务院决定）" and withdrawal["withdrawn_by"] == ADMIN["user_id"]
    assert event.type == "catalog.item_withdrawn.v1"
    assert event.payload == {"item_code": CODE, "version": 2, "department_code": GUIDE["department_code"]}
    events.publish.assert_called_once_with(store.current_outbox, CODE, [event])
    # The listings are told before the event goes out (so a crash in between cannot skip it).
    assert [c[0] for c in store.mock_calls if c[0] in ("withdraw", "listing_changed")] == [
        "withdraw",
        "listing_changed",
    ]
    assert (result["item_code"], result["version"], result["withdrawn_by"]) == (CODE, 2, ADMIN["user_id"])


@pytest.mark.parametrize("body", [{}, {"reason": "   "}, {"reason": "x" * 501}, {"reason": "ok", "extra": 1}])
def test_a_withdrawal_needs_a_reason(service, store, events, body):
    store.latest_version.return_value = stored_version(2)
    with pytest.raises(ValidationFailed):
        service.withdraw_item(ADMIN, CODE, body)
    store.withdraw.assert_not_called()
    events.publish.assert_not_called()


def test_only_admins_withdraw(service, store, events):
    store.latest_version.return_value = stored_version(2)
    with pytest.raises(Forbidden):
        service.withdraw_item({**ADMIN, "roles": ["reviewer"]}, CODE, {"reason": "取消"})
    store.withdraw.assert_not_called()


def test_withdrawing_an_unpublished_item_is_not_found(service, store, events):
    with pytest.raises(NotFound):
        service.withdraw_item(ADMIN, CODE, {"reason": "取消"})
    events.publish.assert_not_called()


def test_withdrawing_twice_is_a_conflict_that_says_since_when(service, store, events):
    store.latest_version.return_value = {**stored_version(2), "withdrawn": WITHDRAWN}
    with pytest.raises(Conflict, match="since 2026-11-20"):
        service.withdraw_item(ADMIN, CODE, {"reason": "取消"})
    store.withdraw.assert_not_called()


def test_a_withdrawal_delivered_again_answers_the_withdrawal_it_made(service, store, events):
    # Its reply lost as the broker went away, the same request came again: before, a 409.
    store.latest_version.return_value = stored_version(2)
    store.withdraw.return_value = True
    first = service.withdraw_item(ADMIN, CODE, {"reason": "取消"}, "gateway:w-1")
    kept, _ = store.withdraw.call_args.args
    assert kept["request_key"] == "gateway:w-1"
    stored = {k: v for k, v in kept.items() if k != "item_code"}  # as the current row keeps it
    store.latest_version.return_value = {**stored_version(2), "withdrawn": stored}
    assert service.withdraw_item(ADMIN, CODE, {"reason": "取消"}, "gateway:w-1") == first
    assert events.publish.call_count == 1
    with pytest.raises(Conflict):
        service.withdraw_item(ADMIN, CODE, {"reason": "取消"}, "gateway:w-2")


def test_a_withdrawal_that_lost_a_race_is_a_conflict_and_announces_nothing(service, store, events):
    store.latest_version.return_value = stored_version(2)
    store.withdraw.return_value = False  # a new version was published, or it was withdrawn, meanwhile
    with pytest.raises(Conflict):
        service.withdraw_item(ADMIN, CODE, {"reason": "取消"})
    events.publish.assert_not_called()


def test_a_withdrawn_items_guide_is_not_found_and_says_why_but_its_versions_stay(service, store):
    store.latest_version.return_value = {**stored_version(2), "withdrawn": WITHDRAWN}
    with pytest.raises(NotFound, match="事项已取消") as info:
        service.get_item(CODE)
    assert info.value.details == [{"field": "item_code", "issue": "withdrawn"}]
    store.get_version.return_value = stored_version(2)
    assert service.get_item(CODE, 2)["version"] == 2


def test_the_next_version_of_a_withdrawn_item_follows_the_withdrawn_one(service, store):
    store.latest_version.return_value = {**stored_version(2), "withdrawn": WITHDRAWN}
    assert service.publish_guide(GUIDE)["version"] == 3


def test_the_relay_tells_the_listings_before_a_withdrawal_a_dead_writer_left_goes_out(service, store, events):
    service.relay_outbox()
    relayed = {c.args[0]: c.kwargs.get("before_publish") for c in events.relay.call_args_list}
    assert set(relayed) == {store.outbox, store.current_outbox}
    relayed[store.current_outbox](CODE, {"type": "catalog.item_withdrawn.v1"})
    store.listing_changed.assert_called_once_with()
    # A version a dead publisher left is served (its current row moved) before it is announced.
    relayed[store.outbox](
        f"{CODE}@2", {"type": "catalog.item_published.v1", "payload": {"item_code": CODE, "version": 2}}
    )
    store.advance_current_to.assert_called_once_with(CODE, 2)
    # And the listings are told, whether or not the row moved now: a publisher that moved it and
    # died before telling them left every process's cached listing without the version.
    assert store.listing_changed.call_count == 2


def test_the_day_of_a_withdrawal_is_the_day_in_china():
    from services.catalog.guides import withdrawn_message

    late_evening_utc = {**WITHDRAWN, "withdrawn_at": datetime(2026, 11, 20, 17, 30)}  # 01:30 on the 21st in Beijing
    assert "since 2026-11-21:" in withdrawn_message(CODE, late_evening_utc)


def test_the_catalog_is_ready_once_the_starter_catalog_is_in(service, store):
    from services.catalog.seed_catalog import seed_fingerprint
    from services.common.errors import Unavailable

    store.seeded.return_value = False  # a first start, still seeding
    with pytest.raises(Unavailable, match="still being loaded"):
        service.ping()
    store.seeded.return_value = True
    assert service.ping() == "pong"
    store.seeded.assert_called_with(seed_fingerprint())
