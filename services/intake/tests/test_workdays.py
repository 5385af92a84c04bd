from datetime import date

from services.intake.workdays import add_working_days


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
