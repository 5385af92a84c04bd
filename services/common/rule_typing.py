"""CEL functions that keep a bool apart from a number, and compare numbers across types, as CEL does.

cel-python's bool is a Python int, so without these `form.count >= 1`, `int(form.count) >= 1`,
`1 in form.list` and `form.list == [1]` all passed for a `true` (or `[true]`) where the form
schema leaves a field untyped. Each refuses such operands ("no such overload"): the rule errors,
and a reviewer decides. Passed to every program as its `functions`.

And cel-python compares no int with a double (`form.income <= 5000.0` errored for 6000, `form.x ==
5000` for 5000.0; only a double left of an int ordered): a field of JSON Schema's `number` holds
either, as the applicant wrote it, so writing 6000 instead of 6000.0 turned a rejection into a
reviewer's case. CEL compares numbers of different types by value (its heterogeneous equality and
cross-type ordering); so do these. For the same reason `+ - * /` with an int beside a double are
done in doubles (cel-python did so with the double on the left only; CEL has no such overload, so
`form.area * 1.5` errored for an area written 60 and worked for 60.0).
"""

from __future__ import annotations

import operator
from typing import Any

from celpy import InterpretedRunner, celtypes
from celpy.evaluation import CELEvalError, Evaluator, base_functions

ARITHMETIC = ("_+_", "_-_", "_*_", "_/_", "_%_")
ORDERING = ("_<_", "_<=_", "_>_", "_>=_")
_BY_VALUE = {"_<_": operator.lt, "_<=_": operator.le, "_>_": operator.gt, "_>=_": operator.ge}
_PROMOTED = ("_+_", "_-_", "_*_", "_/_")  # an int beside a double: in doubles (CEL has no double %)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, celtypes.BoolType)


def _mixed_numbers(left: Any, right: Any) -> bool:
    """An int (or uint) beside a double: compared by value. Python compares int with float exactly."""
    return _is_number(left) and _is_number(right) and isinstance(left, float) != isinstance(right, float)


def _plain(number: Any) -> int | float:
    return float(number) if isinstance(number, float) else int(number)


def _refused(left: Any, name: str, right: Any) -> TypeError:
    return TypeError(f"no such overload: {type(left).__name__} {name} {type(right).__name__}")


def _bool_beside_number(left: Any, right: Any) -> bool:
    left_bool, right_bool = isinstance(left, celtypes.BoolType), isinstance(right, celtypes.BoolType)
    return (left_bool and _is_number(right)) or (right_bool and _is_number(left))


def _operator(name: str) -> Any:
    """Ordering and arithmetic; `_[_]` too (a list indexed by a bool read its element 0 or 1)."""
    operation, arithmetic, indexing = base_functions[name], name in ARITHMETIC, name == "_[_]"

    def checked(left: Any, right: Any) -> Any:
        left_bool, right_bool = isinstance(left, celtypes.BoolType), isinstance(right, celtypes.BoolType)
        if (
            (arithmetic and (left_bool or right_bool))
            or _bool_beside_number(left, right)
            or (indexing and right_bool and isinstance(left, celtypes.ListType))
        ):
            raise _refused(left, name, right)
        if name in _BY_VALUE and _mixed_numbers(left, right):
            return celtypes.BoolType(_BY_VALUE[name](_plain(left), _plain(right)))
        if name in _PROMOTED and _mixed_numbers(left, right):
            return operation(celtypes.DoubleType(left), celtypes.DoubleType(right))
        if indexing and isinstance(left, celtypes.MapType) and (_is_bool(right) or _is_number(right)):
            return _entry(left, right)
        return operation(left, right)

    return checked


def _entry(mapping: celtypes.MapType, key: Any) -> Any:
    """`{form.flag: 1}[1]`: a Python dict takes `1` for the key `true`; CEL has no such key."""
    for stored, value in mapping.items():
        if _typed_key(stored) == _typed_key(key):
            return value
    raise KeyError(key)


def _typed_key(key: Any) -> tuple[bool, Any]:
    return isinstance(key, celtypes.BoolType), key  # a map's `true` key is not its `1` key


def equal(left: Any, right: Any) -> bool:
    """CEL's equality, with a bool never the same as a number, inside lists and maps too."""
    if _bool_beside_number(left, right):
        raise _refused(left, "_==_", right)
    if _mixed_numbers(left, right):
        return _plain(left) == _plain(right)
    if isinstance(left, list) and isinstance(right, list):
        return len(left) == len(right) and all(equal(a, b) for a, b in zip(left, right, strict=True))
    if isinstance(left, dict) and isinstance(right, dict):
        keyed = {_typed_key(k): v for k, v in right.items()}
        if len(left) != len(right) or any(_typed_key(k) not in keyed for k in left):
            return False
        return all(equal(v, keyed[_typed_key(k)]) for k, v in left.items())
    return bool(left == right)


def _equals(left: Any, right: Any) -> Any:
    # An operand that is an error (a missing field) stays one: `form.status != "blocked"` with no
    # status must error, as in CEL, not pass.
    if isinstance(left, CELEvalError) or isinstance(right, CELEvalError):
        return left if isinstance(left, CELEvalError) else right
    return celtypes.BoolType(equal(left, right))


def _differs(left: Any, right: Any) -> Any:
    same = _equals(left, right)
    return same if isinstance(same, CELEvalError) else celtypes.BoolType(not same)


def _in(item: Any, container: Any) -> Any:
    """`item in list` (or a map's keys), by `equal`: found, not found, or the error of a candidate
    that could not be compared when none was found (as cel-python's own `in`)."""
    if isinstance(item, CELEvalError) or isinstance(container, CELEvalError):
        return base_functions["_in_"](item, container)
    error: TypeError | None = None
    for candidate in container:
        try:
            if equal(candidate, item):
                return celtypes.BoolType(True)
        except TypeError as exc:
            error = exc
    if error is not None:
        raise error
    return celtypes.BoolType(False)


def _conversion(name: str, base: type, refused: Any) -> type:
    """`int(true)` and `bool(1)` are no overload in CEL. A subclass, since CEL also names the type
    by it (`type(x) == int`): `TypeOf` answers with it for the base type's values."""

    def new(cls: type, source: Any, *args: Any) -> Any:
        if refused(source):
            raise TypeError(f"no such overload: {name}({type(source).__name__})")
        return base(source, *args)

    return type(base.__name__, (base,), {"__new__": new})


def _is_bool(value: Any) -> bool:
    return isinstance(value, celtypes.BoolType)


_REFUSED = {"int": _is_bool, "uint": _is_bool, "double": _is_bool, "bool": _is_number, "duration": _is_bool}
_CONVERSIONS = {name: _conversion(name, base_functions[name], refused) for name, refused in _REFUSED.items()}
_NAMED = {base_functions[name]: checked for name, checked in _CONVERSIONS.items()}


class TypeOf(celtypes.TypeType):
    """CEL's `type()`: the checked conversions stand for their types, and this for `type` itself
    (`type(int) == type`)."""

    def __new__(cls, value: Any) -> Any:  # type: ignore[misc]
        if isinstance(value, type):
            return TypeOf
        found = type(value)
        return _NAMED.get(found, found)


class _TypedEvaluator(Evaluator):  # type: ignore[misc]
    """`filter` and `exists_one` take a condition, as `all` and `exists` do: cel-python counted any
    truthy value (`form.items.filter(x, x.n)` kept every item whose `n` was not 0)."""

    def build_macro_eval(self, child: Any) -> Any:
        evaluate = super().build_macro_eval(child)
        macro = child.children[1].value
        if macro not in ("filter", "exists_one"):
            return evaluate

        def condition(value: Any) -> Any:
            result = evaluate(value)
            if isinstance(result, CELEvalError):
                raise result
            if not isinstance(result, celtypes.BoolType):
                raise TypeError(f"no such overload: {macro} with a {type(result).__name__} condition")
            return result

        return condition


class TypedRunner(InterpretedRunner):  # type: ignore[misc]
    """The interpreter with `_TypedEvaluator`: `celpy.Environment(runner_class=TypedRunner)`."""

    def evaluate(self, context: Any) -> Any:
        return _TypedEvaluator(ast=self.ast, activation=self.new_activation()).evaluate(context)


TYPED_FUNCTIONS: dict[str, Any] = {
    **{name: _operator(name) for name in (*ORDERING, *ARITHMETIC, "_[_]")},
    "_==_": _equals,
    "_!=_": _differs,
    "_in_": _in,
    **_CONVERSIONS,
    "type": TypeOf,
}
