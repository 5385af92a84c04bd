"""Paging over a list kept in ordered parts."""

import pytest

from services.common.paging import plan_page

DAYS = [("2026-12-01", 3), ("2026-12-02", 0), ("2026-12-03", 5), ("2026-12-04", 2)]


@pytest.mark.parametrize(
    ("skip", "limit", "plan"),
    [
        (0, 20, [("2026-12-01", 0, 3), ("2026-12-03", 0, 5), ("2026-12-04", 0, 2)]),
        (0, 2, [("2026-12-01", 0, 2)]),
        (2, 2, [("2026-12-01", 2, 1), ("2026-12-03", 0, 1)]),
        (3, 5, [("2026-12-03", 0, 5)]),
        (7, 5, [("2026-12-03", 4, 1), ("2026-12-04", 0, 2)]),
        (10, 5, []),
        (40, 20, []),
    ],
)
def test_a_page_reads_only_the_days_it_falls_into(skip, limit, plan):
    assert plan_page(DAYS, skip, limit) == plan


def test_the_pages_together_are_the_whole_list_in_order():
    rows = [(day, n) for day, size in DAYS for n in range(size)]
    paged = []
    for page in range(4):
        for day, offset, take in plan_page(DAYS, page * 3, 3):
            paged.extend((day, n) for n in range(offset, offset + take))
    assert paged == rows
