"""Answers to applicants' questions in plain language, from the guides' own structure.

A question names (in its own words) an item and asks about one part of its guide: what to bring,
how long it takes, what it costs, who may apply, how it goes, whether one must go in person, on
what legal basis, whom to call. The item comes from search ranking; the part from cue phrases.
Each guide is turned into one passage per section, so an answer is the passage itself.
"""

from __future__ import annotations

from typing import Any

from contracts.catalog import Answer
from services.catalog.search import rank

# Cue phrases per section, matched as substrings of the question (more specific sections first).
SECTION_CUES: dict[str, tuple[str, ...]] = {
    "fees": ("费用", "收费", "多少钱", "要钱", "花钱", "交钱", "免费", "工本费", "收不收费", "付费"),
    "time_limit": ("多久", "几天", "多长时间", "时限", "期限", "什么时候", "批下来", "办结", "工作日", "多快", "等多"),
    "materials": ("材料", "带什么", "带哪些", "提交什么", "准备什么", "准备哪些", "证件", "资料", "要带", "需要带"),
    "conditions": ("条件", "资格", "符合", "谁能", "谁可以", "哪些人", "能不能申请", "可以申请吗", "要求", "够不够"),
    "process": ("流程", "步骤", "程序", "怎么办理", "如何办理", "怎么申请", "如何申请", "环节", "办理过程"),
    "handling": (
        "跑",
        "现场",
        "网上办",
        "网上能",
        "线上",
        "窗口",
        "几次",
        "上门",
        "在家",
        "到场",
        "亲自",
        "在哪",
        "哪里办",
        "哪里交",
    ),
    "legal_basis": ("依据", "法律", "规定", "政策", "条例", "法规"),
    "contact": ("电话", "咨询", "投诉", "联系", "热线"),
}
MATCHED_SECTION_WEIGHT = 1.0
OTHER_SECTION_WEIGHT = 0.35
HANDLING_WORDS = {"online": "全程网上办理，无需到现场（零跑动）", "one_visit": "最多跑一次", "onsite": "需到现场办理"}


# "How do I ...?" with nothing more specific asks for the procedure.
HOW_WORDS = ("怎么", "如何", "怎样")


def detect_sections(question: str) -> list[str]:
    """Sections the question asks about, most specific first; `overview` when none is named."""
    found = [section for section, cues in SECTION_CUES.items() if any(cue in question for cue in cues)]
    if not found and any(word in question for word in HOW_WORDS):
        found = ["process"]
    return found or ["overview"]


def _materials(guide: dict[str, Any]) -> str:
    lines = []
    for n, m in enumerate(guide.get("materials", []), 1):
        notes = ["必需" if m.get("required", True) else "可选"]
        if m.get("source") == "certificate":
            notes.append("政府已有电子证照，无需上传")
        lines.append(f"{n}. {m['name']}（{'，'.join(notes)}）")
    if not lines:
        return f"办理{guide['name']}无需提交纸质材料，在线填写申请表即可。"
    return f"办理{guide['name']}需要提交以下材料：" + "；".join(lines) + "。"


def _fees(guide: dict[str, Any]) -> str:
    fees = guide.get("fees", [])
    if not fees:
        return f"{guide['name']}不收取任何费用。"
    parts = [f"{f['name']}{f['amount']:g}元" + (f"（依据{f['basis']}）" if f.get("basis") else "") for f in fees]
    return f"{guide['name']}的收费标准：" + "；".join(parts) + "。"


def _handling(guide: dict[str, Any]) -> str:
    mode = guide["handling_mode"]
    text = HANDLING_WORDS[mode]
    if mode == "onsite":
        text += f"，需到现场{guide.get('visits_required', 1)}次"
    return f"{guide['name']}{text}。"


def passages(guide: dict[str, Any]) -> dict[str, str]:
    """One passage of plain text per section of the guide."""
    name = guide["name"]
    conditions = "；".join(guide.get("acceptance_conditions", [])) or "无特别条件"
    steps = "；".join(f"{s['step']}. {s['name']}（{s['days']}个工作日）" for s in guide.get("process", []))
    return {
        "overview": (guide.get("summary") or name)
        + f"承诺{guide['promised_days']}个工作日办结，"
        + HANDLING_WORDS[guide["handling_mode"]]
        + "。",
        "materials": _materials(guide),
        "time_limit": f"{name}的法定办结时限为{guide['legal_days']}个工作日，"
        f"承诺办结时限为{guide['promised_days']}个工作日"
        + ("，符合条件的可即时自动审批（秒批）。" if guide.get("auto_approval", {}).get("enabled") else "。"),
        "fees": _fees(guide),
        "conditions": f"申请{name}应当符合以下条件：{conditions}。",
        "process": f"{name}的办理流程：{steps or '网上申请，审核后办结'}。",
        "handling": _handling(guide),
        "legal_basis": f"{name}的设定依据：" + ("、".join(guide.get("legal_basis", [])) or "见相关法律法规") + "。",
        "contact": f"{name}咨询电话：{guide.get('consultation_phone') or '12345'}；"
        f"投诉电话：{guide.get('complaint_phone') or '12345'}。",
    }


def answer(question: str, candidates: list[dict[str, Any]], limit: int = 5) -> list[Answer]:
    """Passages best first. `candidates` are stored items with their tokens and full `guide`."""
    ranked = rank(question, candidates)
    if not ranked:
        return []
    top = ranked[0][0]
    wanted = detect_sections(question)
    results: list[Answer] = []
    seen_names: set[str] = set()
    for item_score, doc in ranked:
        # The same item exists in every county: one answer per item name is enough.
        if doc["name"] in seen_names:
            continue
        seen_names.add(doc["name"])
        texts = passages(doc["guide"])
        for section in [*wanted, *[s for s in ("overview",) if s not in wanted]]:
            weight = MATCHED_SECTION_WEIGHT if section in wanted else OTHER_SECTION_WEIGHT
            results.append(
                Answer(
                    item_code=doc["item_code"],
                    name=doc["name"],
                    section=section,
                    text=texts[section],
                    score=round(item_score / top * weight, 4),
                )
            )
        if len(seen_names) >= limit:
            break
    results.sort(key=lambda a: -a.score)
    return results[:limit]
