"""Benchmark: how often `GET /api/v1/catalog/answers` puts the right item and section first.

    make bench-answers          (or: python -m services.catalog.benchmark.answers_accuracy)

Runs the service's own ranking (services.catalog.answers) over the seed catalog, choosing
candidates exactly as the store does (items sharing a search token with the question). Each line of
questions.jsonl is {"q", "item", "section"}: the expected item *name* (the same item exists in every
county) and guide section. Prints top-1 and top-3 accuracy and the misses.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from services.catalog.answers import answer
from services.catalog.search import index_fields, tokenize
from services.catalog.seed_catalog import seed_guides

QUESTIONS = Path(__file__).with_name("questions.jsonl")


def load_questions() -> list[dict[str, str]]:
    return [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]


def catalog_docs() -> list[dict[str, Any]]:
    return [{**index_fields(g), "item_code": g["item_code"], "name": g["name"], "guide": g} for g in seed_guides()]


def candidates(question: str, docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    tokens = set(tokenize(question))
    return [d for d in docs if tokens & set(d["search_tokens"])]


def evaluate(questions: list[dict[str, str]], docs: list[dict[str, Any]]) -> dict[str, Any]:
    top1 = top3 = 0
    misses = []
    for case in questions:
        found = [(a.name, a.section) for a in answer(case["q"], candidates(case["q"], docs), limit=3)]
        expected = (case["item"], case["section"])
        top1 += bool(found) and found[0] == expected
        top3 += expected in found
        if not found or found[0] != expected:
            misses.append({"q": case["q"], "expected": expected, "got": found[:3]})
    n = len(questions)
    return {"questions": n, "top1": top1 / n, "top3": top3 / n, "misses": misses}


def main() -> int:
    result = evaluate(load_questions(), catalog_docs())
    print(f"answers benchmark: {result['questions']} questions over {len(seed_guides())} seeded items")
    print(f"top-1 accuracy: {result['top1']:.1%}   top-3 accuracy: {result['top3']:.1%}")
    for miss in result["misses"]:
        print(f"  miss: {miss['q']}  expected {miss['expected']}  got {miss['got']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
