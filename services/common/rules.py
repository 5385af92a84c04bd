"""Automatic-approval rules (秒批) in CEL: compiled when an item is saved, evaluated per case.

CEL (cel-python) is a safe, side-effect-free expression language: no I/O, no imports, no loops,
and `matches` runs on RE2 (linear time). What remains unbounded is work over the applicant's data:
macros (`all`, `exists`, `map`, ...) nested in one another multiply it. So an expression is at
most 2,000 characters with macros nested at most two deep, and an evaluation gets a CPU-time
budget; a rule that exceeds it errors, and an erroring rule sends the case to a reviewer.
Shared by catalog (compile on save) and approval (evaluate, explain).
"""

from __future__ import annotations

import contextlib
import functools
import re
import signal
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import celpy
from lark import Token, Tree

VARIABLES = ("applicant", "form", "materials", "certificates")
_REFERENCE = re.compile(r"\b(applicant|form)\.([A-Za-z_][A-Za-z0-9_]*)|\b(materials|certificates)\b")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')

MAX_EXPRESSION_LENGTH = 2000
MAX_MACRO_NESTING = 2
EVALUATION_CPU_SECONDS = 0.25  # per rule; real rules take well under a millisecond
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})

_env = celpy.Environment()


class RuleCompileError(ValueError):
    pass


class RuleTimeout(BaseException):
    """Raised inside an evaluation that ran out of CPU time. A BaseException, so that CEL's own
    error handling (which absorbs errors, e.g. `slow || true`) cannot swallow it."""


@functools.lru_cache(maxsize=4096)
def compile_rule(expression: str) -> Any:
    """A runnable program, or RuleCompileError saying why not (cached: rule sets repeat)."""
    if len(expression) > MAX_EXPRESSION_LENGTH:
        raise RuleCompileError(f"the expression is longer than {MAX_EXPRESSION_LENGTH} characters")
    try:
        ast = _env.compile(expression)
    except Exception as exc:  # celpy raises its own parse errors and occasionally others
        raise RuleCompileError(str(exc).strip().splitlines()[0]) from None
    try:
        nesting = macro_nesting(ast)
    except RecursionError:
        raise RuleCompileError("the expression is nested too deeply") from None
    if nesting > MAX_MACRO_NESTING:
        raise RuleCompileError(f"macros (all, exists, map, ...) are nested {nesting} deep; at most {MAX_MACRO_NESTING}")
    return _env.program(ast)


def macro_nesting(node: Any) -> int:
    """How deeply macro calls sit inside one another's bodies (a chain `a.map(..).filter(..)` is 1)."""
    if not isinstance(node, Tree):
        return 0
    if node.data == "member_dot_arg" and any(isinstance(c, Token) and c.value in MACROS for c in node.children):
        receiver, *arguments = node.children
        return max(macro_nesting(receiver), 1 + max((macro_nesting(a) for a in arguments), default=0))
    return max((macro_nesting(child) for child in node.children), default=0)


@contextlib.contextmanager
def cpu_budget(seconds: float) -> Iterator[None]:
    """RuleTimeout if the block uses more than `seconds` of CPU, the kernel's time on its behalf
    included (a rule that makes the process map and fault in memory spends it there). A
    process-wide CPU-time timer: evaluations never yield to another greenthread, so only one is
    ever running. Where signals cannot be set (outside the main thread) the block runs without a
    budget."""

    active = True

    def expired(signum: int, frame: Any) -> None:
        if active:  # a signal still pending when the block ended is ignored
            raise RuleTimeout(f"the rule used more than {seconds:g}s of CPU time")

    try:
        previous = signal.signal(signal.SIGPROF, expired)
    except ValueError:  # not the main thread
        yield
        return
    # Re-armed every 50 ms of CPU after the first expiry: a signal handled while a finalizer runs
    # (the garbage collector can run one at any point) has its exception ignored by Python, so one
    # shot could be lost; the next one lands in the evaluation.
    signal.setitimer(signal.ITIMER_PROF, seconds, 0.05)
    try:
        yield
    finally:
        active = False
        signal.setitimer(signal.ITIMER_PROF, 0)
        signal.signal(signal.SIGPROF, previous)


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
        activation = {name: celpy.json_to_cel(facts.get(name)) for name in VARIABLES}
        with cpu_budget(EVALUATION_CPU_SECONDS):
            value = program.evaluate(activation)
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, celpy.celtypes.BoolType):
            raise TypeError(f"the rule gave {type(value).__name__}, not a boolean")
        outcome.result = "passed" if bool(value) else "failed"
    except (Exception, RuleTimeout) as exc:
        outcome.error = str(exc.args[0] if exc.args else exc)[:300]
    return outcome


REJECTION_PREFIX = "不符合条件："


def rejection_reason(failed: list[RuleOutcome]) -> str:
    """What the applicant is told: a rule's description states the condition that must hold
    (申请人年满80周岁), so the reason names it as the condition not met, not as a fact."""
    return REJECTION_PREFIX + "；".join(r.description for r in failed)


def evaluate(rules: list[dict[str, Any]], facts: dict[str, Any]) -> Evaluation:
    """All rules pass → approved; a failed `reject` rule → rejected; anything else → manual review.

    A rule that errors never approves and never rejects: a person decides.
    """
    results = [evaluate_rule(rule, facts) for rule in rules]
    if not results:
        return Evaluation("manual_review", results, "the item has no automatic rules")
    rejecting = [r for r in results if r.result == "failed" and r.on_fail == "reject"]
    if rejecting:
        return Evaluation("rejected", results, rejection_reason(rejecting))
    if all(r.result == "passed" for r in results):
        return Evaluation("approved", results, "all automatic approval rules passed")
    return Evaluation("manual_review", results, "some rules need a reviewer's judgement")
