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
import json
import re
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import celpy
from celpy import celtypes
from lark import Token, Tree

from services.common.rule_patterns import bounded_matches, pattern_problem
from services.common.rule_typing import TYPED_FUNCTIONS, TypedRunner

VARIABLES = ("applicant", "form", "materials", "certificates")
_REFERENCE = re.compile(r"\b(applicant|form)\.([A-Za-z_][A-Za-z0-9_]*)|\b(materials|certificates)\b")
# A variable, and the field it is read by when it is (`form.age`), and whether that is a call
# (`form.size()`: a method on the whole of it).
_VARIABLE_USE = re.compile(r"\b(applicant|form|materials|certificates)\b(?:\s*\.\s*([A-Za-z_]\w*)(\s*\()?)?")
_STRING_LITERAL = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
# Text the literal pattern above misreads (a comment's apostrophe pairs with a later one and hides
# the code between as a string; a raw string's backslash escapes nothing; cel-python reads `"\"`
# as a string of one backslash): an expression with any of it is given every variable whole
# rather than risk leaving out a field it reads.
_MISREAD = re.compile(r"//|\"\"\"|\'\'\'|(?<![\w.])[rRbB]{1,2}[\"\']|\\[\"\']")

MAX_EXPRESSION_LENGTH = 2000
MAX_MACRO_NESTING = 2
EVALUATION_CPU_SECONDS = 0.25  # per rule; real rules take well under a millisecond
# A case's rules together, their inputs' conversion to CEL included (an applicant's form may be
# up to a megabyte of fields no rule reads); the rules past it error.
CASE_CPU_SECONDS = 1.0
# Characters of an input's value kept in an explanation (its JSON text, cut): a megabyte field
# read by nine rules made a decision too large to store.
MAX_INPUT_CHARS = 200
MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_FUNCTIONS = {**TYPED_FUNCTIONS, "matches": bounded_matches}

_env = celpy.Environment(runner_class=TypedRunner)


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
    for literal in _STRING_LITERAL.findall(expression):  # any may be a pattern: refused now, not per case
        if problem := pattern_problem(literal[1:-1]):
            raise RuleCompileError(problem)
    return _env.program(ast, functions=_FUNCTIONS)


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


def _explained(value: Any) -> Any:
    """An input's value as an explanation keeps it: itself, or its JSON text cut short."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return value if len(text) <= MAX_INPUT_CHARS else text[:MAX_INPUT_CHARS] + "…"


def _read(expressions: list[str]) -> dict[str, set[str] | None]:
    """What the expressions read of each variable: the fields they name (`form.age`), or None
    for all of it (a variable used whole: `"x" in form`, `form.size()`, `materials`)."""
    reads: dict[str, set[str] | None] = {}
    for expression in expressions:
        if _MISREAD.search(expression):
            return dict.fromkeys(VARIABLES)
        code = _STRING_LITERAL.sub('""', expression)
        for match in _VARIABLE_USE.finditer(code):
            name, field_name, call = match.group(1), match.group(2), match.group(3)
            if field_name is None or call or name in ("materials", "certificates"):
                reads[name] = None
            elif reads.get(name, set()) is not None:
                reads[name] = (reads.get(name) or set()) | {field_name}
    return reads


class Activation(dict[str, Any]):
    """The rules' variables as CEL values, and the fields that have none (`unreadable`: name → why)."""

    def __init__(self) -> None:
        super().__init__()
        self.unreadable: dict[str, str] = {}

    def refuse_unreadable(self, expression: str) -> None:
        """A rule reading a field CEL cannot hold (an integer beyond 64 bits) errors; the others run,
        so such a field cannot turn a case's every rule, a rejecting one included, into errors."""
        if not self.unreadable:  # the usual case: no need to read the expression again
            return
        reads = _read([expression])
        for name, why in self.unreadable.items():
            variable, _, field_name = name.partition(".")
            if variable in reads and (reads[variable] is None or field_name in (reads[variable] or ())):
                raise ValueError(f"{name} cannot be read: {why}")


def _to_cel(name: str, value: Any, activation: Activation) -> Any:
    try:
        return celpy.json_to_cel(value)
    except (ValueError, OverflowError) as exc:
        if not isinstance(value, dict):
            raise
        first_problem = str(exc)
    held = {}
    for key, field_value in value.items():
        try:
            held[celtypes.StringType(key)] = celpy.json_to_cel(field_value)
        except (ValueError, OverflowError) as exc:
            activation.unreadable[f"{name}.{key}"] = str(exc) or first_problem
    return celtypes.MapType(held)


def activation_for(expressions: list[str], facts: dict[str, Any]) -> Activation:
    """The rules' variables as CEL values, built once per case and of what the rules read only
    (the conversion of a form's unread megabyte took over a second, before any budget ran)."""
    reads = _read(expressions)
    activation = Activation()
    for name in VARIABLES:
        value = facts.get(name) if name in reads else None
        wanted = reads.get(name)
        if wanted is not None and isinstance(value, dict):
            value = {k: v for k, v in value.items() if k in wanted}
        activation[name] = _to_cel(name, value, activation)
    return activation


def _inputs(expression: str, facts: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"name": name, "value": _explained(_lookup(facts, name))} for name in referenced_inputs(expression)]


def _errored(rule: dict[str, Any], facts: dict[str, Any], error: str | None = None) -> RuleOutcome:
    """The rule's outcome as an error, with the inputs it reads: what it stays unless it runs."""
    inputs = _inputs(rule["expression"], facts)
    on_fail = rule.get("on_fail", "manual_review")
    return RuleOutcome(rule["id"], rule["description"], rule["expression"], on_fail, "error", inputs, error)


def evaluate_rule(rule: dict[str, Any], facts: dict[str, Any], activation: Activation | None = None) -> RuleOutcome:
    outcome = _errored(rule, facts)
    try:
        program = compile_rule(rule["expression"])
        with cpu_budget(EVALUATION_CPU_SECONDS):
            if activation is None:
                activation = activation_for([rule["expression"]], facts)
            activation.refuse_unreadable(rule["expression"])
            value = program.evaluate(activation)
        if isinstance(value, Exception):
            raise value
        if not isinstance(value, celtypes.BoolType):
            raise TypeError(f"the rule gave {type(value).__name__}, not a boolean")
        outcome.result = "passed" if bool(value) else "failed"
    except (Exception, RuleTimeout) as exc:
        outcome.error = str(exc.args[0] if exc.args else exc)[:300]
    return outcome


def _evaluate_all(rules: list[dict[str, Any]], facts: dict[str, Any]) -> list[RuleOutcome]:
    """Each rule within its own budget, and all of them within the case's."""
    started = time.process_time()
    activation: Activation | None = None
    failure: str | None = None
    try:
        with cpu_budget(EVALUATION_CPU_SECONDS):
            activation = activation_for([rule["expression"] for rule in rules], facts)
    except (Exception, RuleTimeout) as exc:
        failure = f"the case's data could not be read: {str(exc.args[0] if exc.args else exc)[:200]}"
    results = []
    for rule in rules:
        if failure is None and time.process_time() - started > CASE_CPU_SECONDS:
            failure = f"the case's rules used more than {CASE_CPU_SECONDS:g}s of CPU time together"
        results.append(evaluate_rule(rule, facts, activation) if failure is None else _errored(rule, facts, failure))
    return results


REJECTION_PREFIX = "不符合条件："


def rejection_reason(failed: list[RuleOutcome]) -> str:
    """What the applicant is told: a rule's description states the condition that must hold
    (申请人年满80周岁), so the reason names it as the condition not met, not as a fact."""
    return REJECTION_PREFIX + "；".join(r.description for r in failed)


def evaluate(rules: list[dict[str, Any]], facts: dict[str, Any]) -> Evaluation:
    """All rules pass → approved; a failed `reject` rule → rejected; anything else → manual review.

    A rule that errors never approves and never rejects: a person decides.
    """
    results = _evaluate_all(rules, facts)
    if not results:
        return Evaluation("manual_review", results, "the item has no automatic rules")
    rejecting = [r for r in results if r.result == "failed" and r.on_fail == "reject"]
    if rejecting:
        return Evaluation("rejected", results, rejection_reason(rejecting))
    if all(r.result == "passed" for r in results):
        return Evaluation("approved", results, "all automatic approval rules passed")
    return Evaluation("manual_review", results, "some rules need a reviewer's judgement")
