"""The generated seed catalog (services/catalog/seed_catalog.py + seed_templates.py)."""

import re
from collections import Counter

import pytest

from contracts.catalog import ITEM_CODE_PATTERN
from services.catalog import seed_catalog, seed_data
from services.catalog.guides import checked_guide
from services.catalog.seed_catalog import FIRST_GENERATED_SERIAL, departments, seed_fingerprint, seed_guides
from services.catalog.seed_templates import DEPARTMENT_KINDS, REGIONS

TYPE_CODES = {"licensing": "XK", "benefit": "GF", "confirmation": "QR", "levy": "ZS", "other": "QT"}


def serial(code):
    return int(code.rsplit("-", 1)[1])


def generated():
    hand_written = {i["item_code"] for i in seed_data.seed_items()}
    return [g for g in seed_guides() if g["item_code"] not in hand_written]


def test_a_realistic_number_of_departments_and_items():
    assert len(departments()) >= 40
    assert len(seed_guides()) >= 500


def test_every_seeded_item_is_a_valid_guide():
    for guide in seed_guides():
        checked_guide(guide)


def test_item_codes_are_unique_and_well_formed():
    codes = [g["item_code"] for g in seed_guides()]
    assert [c for c, n in Counter(codes).items() if n > 1] == []
    assert all(re.match(ITEM_CODE_PATTERN, c) for c in codes)


def test_department_codes_are_unique():
    codes = [d["code"] for d in departments()]
    assert len(codes) == len(set(codes))
    assert codes == sorted(codes)


def test_every_item_belongs_to_a_seeded_department():
    known = {d["code"] for d in departments()}
    assert {g["department_code"] for g in seed_guides()} <= known


def test_every_department_offers_items():
    offered = Counter(g["department_code"] for g in seed_guides())
    assert all(offered[d["code"]] >= 1 for d in departments())


def test_the_hand_written_departments_and_items_are_kept():
    assert {d["code"] for d in seed_data.DEPARTMENTS} <= {d["code"] for d in departments()}
    assert list(seed_guides()[: len(seed_data.seed_items())]) == seed_data.seed_items()


def test_all_item_types_and_handling_modes_occur():
    assert {g["item_type"] for g in seed_guides()} == set(TYPE_CODES)
    assert {g["handling_mode"] for g in seed_guides()} == {"online", "one_visit", "onsite"}


def test_the_type_code_in_an_item_code_matches_the_item_type():
    for guide in seed_guides():
        assert guide["item_code"].split("-")[1] == TYPE_CODES[guide["item_type"]], guide["item_code"]


def test_an_item_code_starts_with_its_departments_region():
    for guide in seed_guides():
        region, kind = guide["department_code"][:6], guide["department_code"][6:]
        assert guide["item_code"].startswith(f"{region}00{kind}-"), guide["item_code"]


def test_hand_written_serials_stay_below_the_generated_ones():
    assert FIRST_GENERATED_SERIAL == 101
    assert all(1 <= serial(i["item_code"]) <= 100 for i in seed_data.seed_items())


def test_generated_serials_start_at_0101():
    mine = generated()
    assert len(mine) == len(seed_guides()) - len(seed_data.seed_items())
    assert all(serial(g["item_code"]) >= FIRST_GENERATED_SERIAL for g in mine)
    # Per department and type the serials run 0101, 0102, ... without gaps.
    runs: dict[str, list[int]] = {}
    for guide in mine:
        runs.setdefault(guide["item_code"].rsplit("-", 1)[0], []).append(serial(guide["item_code"]))
    for prefix, serials in runs.items():
        assert serials == list(range(FIRST_GENERATED_SERIAL, FIRST_GENERATED_SERIAL + len(serials))), prefix
    assert any(g["item_code"].endswith("-0101") for g in mine)


def test_every_region_gets_every_kind_of_department():
    codes = {d["code"] for d in departments()}
    for region, _ in REGIONS:
        for kind in DEPARTMENT_KINDS:
            assert f"{region}{kind['code']}" in codes


def test_generated_materials_and_rules_are_usable():
    for guide in generated():
        codes = [m["code"] for m in guide["materials"]]
        assert len(codes) == len(set(codes)), guide["item_code"]
        assert guide["promised_days"] <= guide["legal_days"], guide["item_code"]
        assert guide["auto_approval"]["enabled"] == bool(guide["auto_approval"]["rules"])
        assert guide["form_schema"]["additionalProperties"] is False
        assert set(guide["form_schema"]["required"]) <= set(guide["form_schema"]["properties"])


def test_search_has_words_to_work_with():
    assert all(g["summary"] and g["keywords"] for g in generated())


# --- fingerprint ----------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def fresh_cache():
    seed_guides.cache_clear()
    seed_fingerprint.cache_clear()
    yield
    seed_guides.cache_clear()
    seed_fingerprint.cache_clear()


def test_the_fingerprint_is_stable():
    first = seed_fingerprint()
    assert first == seed_fingerprint()
    assert re.fullmatch(r"[0-9a-f]{16}", first)


def test_the_fingerprint_does_not_depend_on_the_cache():
    before = seed_fingerprint()
    seed_guides.cache_clear()
    seed_fingerprint.cache_clear()
    assert seed_fingerprint() == before


def test_the_fingerprint_is_hashed_once_per_process(monkeypatch):
    # Readiness probes ping catalog freely; each ping must not serialise the whole seed again.
    seed_fingerprint()
    monkeypatch.setattr(seed_catalog.json, "dumps", lambda *a, **k: pytest.fail("the seed was serialised again"))
    seed_fingerprint()


def test_the_fingerprint_changes_when_an_item_changes(monkeypatch):
    before = seed_fingerprint()
    original = seed_data.seed_items

    def edited():
        items = original()
        items[0] = {**items[0], "promised_days": items[0]["promised_days"] - 1}
        return items

    monkeypatch.setattr(seed_data, "seed_items", edited)
    seed_guides.cache_clear()
    seed_fingerprint.cache_clear()
    assert seed_fingerprint() != before


def test_the_fingerprint_changes_when_a_department_changes(monkeypatch):
    before = seed_fingerprint()
    renamed = [{**d, "name": d["name"] + "（新）"} if i == 0 else d for i, d in enumerate(departments())]
    monkeypatch.setattr(seed_catalog, "departments", lambda: renamed)
    seed_fingerprint.cache_clear()
    assert seed_fingerprint() != before


def test_the_fingerprint_changes_when_an_item_is_added(monkeypatch):
    before = seed_fingerprint()
    extra = {**seed_guides()[0], "item_code": "62052400MZ-GF-0099"}
    monkeypatch.setattr(seed_catalog, "seed_guides", lambda: (*seed_guides(), extra))
    seed_fingerprint.cache_clear()
    assert seed_fingerprint() != before
