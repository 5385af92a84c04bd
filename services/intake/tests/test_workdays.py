from datetime import date

import pytest

from services.intake.workdays import add_working_days, working_days_between


def test_skips_national_day_holiday():
    # 2026-09-30 is a Wednesday; 1-7 October are the National Day holidays.
    deadline, provisional = add_working_days(date(2026, 9, 30), 1)
    assert deadline == date(2026, 10, 8)
    assert provisional is False


def test_plain_week():
    assert add_working_days(date(2026, 11, 23), 5) == (date(2026, 11, 30), False)


def test_zero_days_is_same_day():
    assert add_working_days(date(2026, 11, 26), 0) == (date(2026, 11, 26), False)


def test_unknown_year_is_provisional_weekends_only():
    deadline, provisional = add_working_days(date(2031, 1, 6), 5)  # a Monday
    assert deadline == date(2031, 1, 13)
    assert provisional is True


# --- working_days_between ---------------------------------------------------------------------------


def test_working_days_between_counts_after_start_up_to_and_including_end():
    assert working_days_between(date(2026, 11, 23), date(2026, 11, 24))[0] == 1  # Monday → Tuesday
    assert working_days_between(date(2026, 11, 23), date(2026, 11, 27))[0] == 4  # Monday → Friday
    assert working_days_between(date(2026, 11, 23), date(2026, 11, 30))[0] == 5  # a full week


def test_working_days_between_skips_weekends():
    assert working_days_between(date(2026, 11, 27), date(2026, 11, 29))[0] == 0  # Friday → Sunday
    assert working_days_between(date(2026, 11, 28), date(2026, 11, 30))[0] == 1  # Saturday → Monday


def test_working_days_between_skips_the_national_day_holiday():
    # 30 September is a working day, 1-7 October are holidays, 8 and 9 October working days.
    assert working_days_between(date(2026, 9, 29), date(2026, 10, 9))[0] == 3
    assert working_days_between(date(2026, 9, 30), date(2026, 10, 7))[0] == 0


def test_working_days_between_counts_a_makeup_weekend_day():
    assert working_days_between(date(2026, 10, 9), date(2026, 10, 10))[0] == 1  # Saturday 10 October is worked


@pytest.mark.parametrize(
    ("start", "end"), [(date(2026, 11, 23), date(2026, 11, 23)), (date(2026, 11, 27), date(2026, 11, 23))]
)
def test_working_days_between_is_zero_when_end_is_not_after_start(start, end):
    assert working_days_between(start, end)[0] == 0


def test_working_days_between_falls_back_to_weekdays_in_unknown_years_and_says_so():
    assert working_days_between(date(2031, 1, 6), date(2031, 1, 13)) == (5, True)
    assert working_days_between(date(2026, 11, 23), date(2026, 11, 30)) == (5, False)


def test_working_days_between_undoes_add_working_days():
    for start in (date(2026, 9, 28), date(2026, 11, 23), date(2026, 12, 31)):
        for days in (0, 1, 3, 10):
            end, _ = add_working_days(start, days)
            assert working_days_between(start, end)[0] == days


def test_across_the_year_boundary_an_unloaded_year_is_provisional_until_loaded():
    from services.intake import workdays

    # 2026-12-30 (Wednesday) + 5 working days reaches into 2027, which the package does not know.
    try:
        assert workdays.add_working_days(date(2026, 12, 30), 5) == (date(2027, 1, 6), True)
        workdays.use_loaded_years(
            {2027: workdays.YearTable(holidays=frozenset({date(2027, 1, 1)}), workdays=frozenset())}
        )
        # 31 Dec, (1 Jan is a holiday), 4, 5, 6, 7 Jan.
        assert workdays.add_working_days(date(2026, 12, 30), 5) == (date(2027, 1, 7), False)
        assert workdays.year_view(2027)["source"] == "loaded"
    finally:
        workdays.use_loaded_years({})
    assert workdays.year_view(2027)["source"] == "weekends_only"
    assert workdays.year_view(2026)["source"] == "package"
    assert "2026-10-01" in workdays.year_view(2026)["holidays"]
    assert "2026-10-10" in workdays.year_view(2026)["workdays"]


def test_a_loaded_adjusted_working_day_counts():
    from services.intake import workdays

    saturday = date(2027, 2, 20)
    try:
        workdays.use_loaded_years({2027: workdays.YearTable(frozenset(), frozenset({saturday}))})
        assert workdays.add_working_days(date(2027, 2, 19), 1) == (saturday, False)
    finally:
        workdays.use_loaded_years({})


def test_calendar_tables_are_checked():
    from services.intake.workdays import table_problems

    problems = table_problems(2027, [date(2026, 12, 31), date(2027, 1, 1)], [date(2027, 1, 4), date(2027, 1, 1)])
    issues = {p["field"]: p["issue"] for p in problems}
    assert "holidays.0" in issues and "workdays.0" in issues and "workdays" in issues
