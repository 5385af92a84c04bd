"""What a rule's regular expression (`matches`) may cost.

RE2 runs in time linear in the text, but with a factor of the pattern's compiled size, and a
counted repetition is compiled as that many copies: `a.{1000}c` against a megabyte of form took
6 s inside one native call, which no CPU budget can interrupt. So a pattern's counted repetitions,
multiplied where nested and added where in sequence, come to at most MAX_REPETITION: `a.{100}c`
is 100, `a(.{30}){30}c` is 900 and ten `.{100}` in a row are 1,000. Checked for a literal when
the rule is saved and for every pattern when it runs (one read from the form included).
"""

from __future__ import annotations

import functools
import math
import re
from re import _constants as sre  # type: ignore[attr-defined]
from re import _parser  # type: ignore[attr-defined]
from typing import Any

from celpy.evaluation import CELEvalError, base_functions

MAX_REPETITION = 100
MAX_PATTERN_LENGTH = 1000
_COUNT = re.compile(r"\{(\d+)(?:,(\d*))?\}")
# RE2 syntax Python's parser does not know, each an atom: a Unicode class, `\C`; `\z` is `\Z`.
_RE2_ONLY = re.compile(r"\\[pP](?:\{[^}]*\}|\w)|\\C")
_REPEATS = {sre.MAX_REPEAT, sre.MIN_REPEAT, getattr(sre, "POSSESSIVE_REPEAT", sre.MAX_REPEAT)}


def _weight(parsed: Any) -> int:
    total = 0
    for op, av in parsed:
        if op in _REPEATS:
            low, high, inner = av
            count = max(1, low) if high == sre.MAXREPEAT else high  # `(x{1000})*` costs x{1000} at least
            total += count * max(1, _weight(inner))
        elif op is sre.SUBPATTERN:
            total += _weight(av[-1])
        elif op is sre.BRANCH:
            total += sum(_weight(branch) for branch in av[1])
        elif op in (sre.ASSERT, sre.ASSERT_NOT):
            total += _weight(av[1])
        elif op is getattr(sre, "ATOMIC_GROUP", None):
            total += _weight(av)
        elif op is sre.GROUPREF_EXISTS:
            total += sum(_weight(branch) for branch in av[1:] if branch is not None)
    return total


def repetition(pattern: str) -> int:
    """The pattern's counted repetitions (see the module's note). One Python cannot parse is
    weighed by the product of its counts, which is never less."""
    try:
        return _weight(_parser.parse(_RE2_ONLY.sub(".", pattern).replace("\\z", "\\Z")))
    except (re.error, RecursionError, OverflowError, ValueError):
        counts = [int(n) for match in _COUNT.finditer(pattern) for n in match.groups() if n]
        return math.prod(max(1, count) for count in counts) if counts else 0


@functools.lru_cache(maxsize=1024)
def pattern_problem(pattern: str) -> str | None:
    """Why the pattern may not run, or None."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        return f"a pattern is longer than {MAX_PATTERN_LENGTH} characters"
    weight = repetition(pattern)
    if weight > MAX_REPETITION:
        return f"a pattern repeats {weight} times in all; at most {MAX_REPETITION}"
    return None


def bounded_matches(text: Any, pattern: Any) -> Any:
    """CEL's `matches`, for a pattern within the bounds only (an error otherwise, as for a pattern
    RE2 cannot compile)."""
    problem = pattern_problem(str(pattern))
    if problem is not None:
        return CELEvalError(problem, ValueError, (problem,))
    return base_functions["matches"](text, pattern)
