"""Deadlines in Chinese working days: weekends, public holidays and adjusted working days.

Years the chinese-calendar package knows come from it. Later years come from tables an admin
loads from the State Council's annual notice (`PUT /api/v1/admin/calendar/{year}`), which also
override the package. A year with neither counts weekends only, and deadlines in it are marked
provisional until its table is loaded (then they are recomputed).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import chinese_calendar


@dataclass(frozen=True)
class YearTable:
    holidays: frozenset[date]
    workdays: frozenset[date]  # adjusted working days that fall on a weekend


# Loaded tables, by year; refreshed from intake's store (see IntakeService.refresh_calendar).
_loaded: dict[int, YearTable] = {}
_refreshed = False
_guessed_before_refresh = False  # a weekends-only guess made before the first refresh


def use_loaded_years(tables: dict[int, YearTable]) -> bool:
    """Use these tables from now on; whether they differ from those this process used before. At
    its first refresh, only if it already guessed a year by weekends: requests served before it (a
    restart under load, a first read of the store that failed) counted a loaded year that way."""
    global _refreshed
    changed = tables != _loaded and (_refreshed or _guessed_before_refresh)
    _refreshed = True
    _loaded.clear()
    _loaded.update(tables)
    return changed


def is_workday(day: date) -> tuple[bool, bool]:
    """(is it a working day, was that only a weekends-only guess)."""
    table = _loaded.get(day.year)
    if table is not None:
        return day in table.workdays or (day.weekday() < 5 and day not in table.holidays), False
    try:
        return chinese_calendar.is_workday(day), False
    except NotImplementedError:
        if not _refreshed:
            global _guessed_before_refresh
            _guessed_before_refresh = True
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


def working_days_between(start: date, end: date) -> tuple[int, bool]:
    """Working days after `start` up to and including `end` (0 when end <= start), and whether
    that count rests on a weekends-only guess."""
    count, guessed, current = 0, False, start
    while current < end:
        current += timedelta(days=1)
        workday, guess = is_workday(current)
        guessed |= guess
        if workday:
            count += 1
    return count, guessed


def next_working_day(day: date) -> date:
    return add_working_days(day, 1)[0]


def year_view(year: int) -> dict[str, Any]:
    """`GET /api/v1/calendar/{year}`: where the year's calendar comes from, and its exceptions."""
    table = _loaded.get(year)
    if table is not None:
        holidays, workdays, source = table.holidays, table.workdays, "loaded"
    else:
        first, last = date(year, 1, 1), date(year, 12, 31)
        try:
            holidays = frozenset(chinese_calendar.get_holidays(first, last, include_weekends=False))
            weekend_workdays = chinese_calendar.get_workdays(first, last, include_weekends=True)
            workdays = frozenset(d for d in weekend_workdays if d.weekday() >= 5)
            source = "package"
        except NotImplementedError:
            holidays, workdays, source = frozenset(), frozenset(), "weekends_only"
    return {
        "year": year,
        "source": source,
        "holidays": sorted(d.isoformat() for d in holidays),
        "workdays": sorted(d.isoformat() for d in workdays),
    }


def table_problems(year: int, holidays: list[date], workdays: list[date]) -> list[dict[str, str]]:
    problems = []
    for field, days in (("holidays", holidays), ("workdays", workdays)):
        for index, day in enumerate(days):
            if day.year != year:
                problems.append({"field": f"{field}.{index}", "issue": f"{day} is not in {year}"})
    for index, day in enumerate(workdays):
        if day.weekday() < 5:
            problems.append(
                {"field": f"workdays.{index}", "issue": f"{day} is a weekday: list only adjusted weekend days"}
            )
    for day in sorted(set(holidays) & set(workdays)):
        problems.append({"field": "workdays", "issue": f"{day} is listed as a holiday too"})
    return problems
