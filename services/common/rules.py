"""Automatic-approval rules (秒批) in CEL: compiled when an item is saved, evaluated per case.

CEL (cel-python) is a safe, side-effect-free expression language: no I/O, no imports, bounded.
Shared by catalog (compile on save) and approval (evaluate, explain).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from typing import Any, Literal

import celpy

VARIABLES = ("applicant", "form", "materials", "certificates")
_REFERENCE = re.compile(r"\b(applicant|form)\.([A-Za-z_][A-Za-z0-9_]*)|\b(materials|certificates)\b")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')

_env = celpy.Environment()


class RuleCompileError(ValueError):
    pass


@functools.lru_cache(maxsize=4096)
def compile_rule(expression: str) -> Any:
    """A runnable program, or RuleCompileError saying why not (cached: rule sets repeat)."""
    try:
        return _env.program(_env.compile(expression))
    except Exception as exc:  # celpy raises its own parse errors and occasionally others
        raise RuleCompileError(str(exc).strip().splitlines()[0]) from None


def referenced_inputs(expression: str) -> list[str]:
    """The inputs an expression reads, e.g. ['applicant.age', 'materials'] (for explanations)."""
    code = _STRING_LITERAL.sub('""', expression)
    seen: list[str] = []
    for match in _REFERENCE.finditer(code):
        name = f"{match.group(1)}.{match.group(2)}" if match.group(1) else match.group(3)
        if name not in seen:
            seen.append(name)
    return seen


@dataclass
class RuleOutcome:
    rule_id: str
    description: str
    expression: str
    on_fail: str
    result: Literal["passed", "failed", "error"]
    inputs: list[dict[str, Any]] = field(default_factory=list)  # [{"name", "value"}]: names have dots
    error: str | None = None


@dataclass
class Evaluation:
    outcome: Literal["approved", "rejected", "manual_review"]
    results: list[RuleOutcome]
    reason: str | None = None


def _lookup(facts: dict[str, Any], path: str) -> Any:
    value: Any = facts
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def evaluate_rule(rule: dict[str, Any], facts: dict[str, Any]) -> RuleOutcome:
    inputs = [{"name": name, "value": _lookup(facts, name)} for name in referenced_inputs(rule["expression"])]
    outcome = RuleOutcome(
        rule["id"], rule["description"], rule["expression"], rule.get("on_fail", "manual_review"), "error", inputs
    )
    try:
        program = compile_rule(rule["expression"])
        value = program.evaluate({name: celpy.json_to_cel(facts.get(name)) for name in VARIABLES})
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, celpy.celtypes.BoolType):
            raise TypeError(f"the rule gave {type(value).__name__}, not a boolean")
        outcome.result = "passed" if bool(value) else "failed"
    except Exception as exc:
        outcome.error = str(exc.args[0] if exc.args else exc)[:300]
    return outcome


def evaluate(rules: list[dict[str, Any]], facts: dict[str, Any]) -> Evaluation:
    """All rules pass → approved; a failed `reject` rule → rejected; anything else → manual review.

    A rule that errors never approves and never rejects: a person decides.
    """
    results = [evaluate_rule(rule, facts) for rule in rules]
    if not results:
        return Evaluation("manual_review", results, "the item has no automatic rules")
    rejecting = [r for r in results if r.result == "failed" and r.on_fail == "reject"]
    if rejecting:
        return Evaluation("rejected", results, "；".join(r.description for r in rejecting))
    if all(r.result == "passed" for r in results):
        return Evaluation("approved", results, "all automatic approval rules passed")
    return Evaluation("manual_review", results, "some rules need a reviewer's judgement")
