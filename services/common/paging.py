"""Paging over a list kept in ordered parts (documents of bounded size) whose sizes are known."""

from __future__ import annotations


def plan_page(sizes: list[tuple[str, int]], skip: int, limit: int) -> list[tuple[str, int, int]]:
    """Which parts a page of the list falls into: (part, rows to skip in it, rows to take)."""
    plan = []
    for part, size in sizes:
        if limit <= 0:
            break
        if skip >= size:
            skip -= size
            continue
        take = min(size - skip, limit)
        if take > 0:
            plan.append((part, skip, take))
        skip, limit = 0, limit - take
    return plan
