"""Deadlines in Chinese working days (State Council calendar, via chinese-calendar).

Years the package does not know yet fall back to weekends-only counting, and the deadline
is marked provisional until an admin loads that year's notice (calendar issue).
"""

from __future__ import annotations

from datetime import date, timedelta

import chinese_calendar


def is_workday(day: date) -> tuple[bool, bool]:
    """(is it a working day, was that only a weekends-only guess)."""
    try:
        return chinese_calendar.is_workday(day), False
    except NotImplementedError:
        return day.weekday() < 5, True


def add_working_days(start: date, days: int) -> tuple[date, bool]:
    """The date `days` working days after `start` (0 → start itself), and whether it is provisional."""
    current, provisional, remaining = start, False, days
    while remaining > 0:
        current += timedelta(days=1)
        workday, guessed = is_workday(current)
        provisional |= guessed
        if workday:
            remaining -= 1
    return current, provisional


def working_days_between(start: date, end: date) -> int:
    """Working days after `start` up to and including `end` (0 when end <= start)."""
    count, current = 0, start
    while current < end:
        current += timedelta(days=1)
        if is_workday(current)[0]:
            count += 1
    return count
