"""The seed catalog: hand-written items that exercise automatic approval (seed_data.py), plus a
realistic catalog generated from templates (seed_templates.py): every region gets one department
of each kind, every department every item of its kind.

`python -m services.catalog.seed_catalog` prints what it would seed.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from functools import cache
from typing import Any

from services.catalog import seed_data
from services.catalog.seed_templates import (
    COMPLAINT_PHONE,
    CONSULTATION_PHONE,
    DEPARTMENT_KINDS,
    REGIONS,
    DepartmentKind,
    ItemTemplate,
)

FIRST_GENERATED_SERIAL = 101  # 0001–0100 are kept for hand-written items


def departments() -> list[dict[str, str]]:
    generated = {
        f"{code}{kind['code']}": {"code": f"{code}{kind['code']}", "name": f"{name}{kind['name']}", "region_code": code}
        for code, name in REGIONS
        for kind in DEPARTMENT_KINDS
    }
    for department in seed_data.DEPARTMENTS:
        generated.setdefault(department["code"], department)
    return sorted(generated.values(), key=lambda d: d["code"])


def form_schema(template: ItemTemplate) -> dict[str, Any]:
    properties: dict[str, Any] = {}
    for field in template.get("form", []):
        prop: dict[str, Any] = {"type": field["type"], "title": field["title"]}
        for option in ("pattern", "enum", "minimum"):
            if option in field:
                prop[option] = field[option]
        properties[field["name"]] = prop
    required = [f["name"] for f in template.get("form", []) if f.get("required", True)]
    return {"type": "object", "required": required, "properties": properties, "additionalProperties": False}


def guide_from(template: ItemTemplate, region: tuple[str, str], kind: DepartmentKind, serial: int) -> dict[str, Any]:
    region_code, _ = region
    certificate = template.get("certificate")
    return {
        "item_code": f"{region_code}00{kind['code']}-{template['type_code']}-{serial:04d}",
        "name": template["name"],
        "department_code": f"{region_code}{kind['code']}",
        "item_type": template["item_type"],
        "summary": template.get("summary", ""),
        "keywords": template.get("keywords", []),
        "legal_basis": template.get("legal_basis", []),
        "applicant_types": template["applicant_types"],
        "acceptance_conditions": template.get("conditions", []),
        "materials": [{"required": True, "source": "applicant_upload", **m} for m in template.get("materials", [])],
        "process": [
            {"step": n, "name": name, "days": days} for n, (name, days) in enumerate(template.get("process", []), 1)
        ],
        "legal_days": template["legal_days"],
        "promised_days": template["promised_days"],
        "fees": [{"name": name, "amount": amount, "basis": basis} for name, amount, basis in template.get("fees", [])],
        "handling_mode": template["handling_mode"],
        "visits_required": template.get("visits_required", 0),
        "consultation_phone": CONSULTATION_PHONE,
        "complaint_phone": COMPLAINT_PHONE,
        "form_schema": form_schema(template),
        "auto_approval": {"enabled": bool(template.get("rules")), "rules": template.get("rules", [])},
        "issues_certificate": (
            {"type": certificate[0], "name": certificate[1], "valid_days": certificate[2]} if certificate else None
        ),
    }


@cache
def seed_guides() -> tuple[dict[str, Any], ...]:
    """Every seeded guide: the hand-written ones first, then the generated ones (stable codes)."""
    guides = list(seed_data.seed_items())
    for region in REGIONS:
        for kind in DEPARTMENT_KINDS:
            serials: Counter[str] = Counter()
            for template in kind["items"]:
                serial = FIRST_GENERATED_SERIAL + serials[template["type_code"]]
                serials[template["type_code"]] += 1
                guides.append(guide_from(template, region, kind, serial))
    return tuple(guides)


@cache
def seed_fingerprint() -> str:
    """Changes whenever the seed content changes, so a new seed is applied once."""
    # Cached: readiness probes ask for it on every ping, and hashing 581 guides costs ~14 ms of CPU.
    payload = json.dumps([departments(), list(seed_guides())], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


if __name__ == "__main__":
    guides = seed_guides()
    print(f"{len(departments())} departments, {len(guides)} items, fingerprint {seed_fingerprint()}")
    print("by type:", dict(Counter(g["item_type"] for g in guides)))
    print("by handling mode:", dict(Counter(g["handling_mode"] for g in guides)))
    print("automatic approval:", sum(g["auto_approval"]["enabled"] for g in guides))
