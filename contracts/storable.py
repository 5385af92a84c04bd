"""What the document store cannot keep inside a document, found in one place for everything that
stores client-shaped JSON (a case's form, an item's form schema)."""

from __future__ import annotations

from typing import Any


def unstorable_part(value: Any, path: str) -> str | None:
    """Why `value` (at `path`) cannot be stored as it is, naming where; None when it can. Field
    names may not be empty, contain '.' or start with '$' (MongoDB reads them as paths and
    operators); an array may not hold an array (the FerretDB stand-in cannot store one)."""
    stack: list[tuple[Any, str]] = [(value, path)]
    while stack:
        current, where = stack.pop()
        if isinstance(current, dict):
            for key, inner in current.items():
                if "." in key or key.startswith("$") or not key:
                    return f"field name {key!r} at {where} may not be empty, contain '.' or start with '$'"
                stack.append((inner, f"{where}.{key}"))
        elif isinstance(current, list):
            for index, inner in enumerate(current):
                if isinstance(inner, list):
                    return f"{where}.{index}: a list inside a list is not supported"
                stack.append((inner, f"{where}.{index}"))
    return None
