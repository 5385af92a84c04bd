from datetime import date

from services.intake.deadlines import Due, due, limits

WARN, OVERDUE = "2026-11-27", "2026-11-25"  # tomorrow is the next working day; yesterday


def case(deadline="2026-11-27", status="accepted", **flags):
    return {"case_no": "C-1", "status": status, "deadline": deadline, **flags}


def test_a_deadline_on_the_next_working_day_is_warned_and_still_watched():
    assert due(case(), "2026-11-27", WARN, OVERDUE) == Due(("deadline_warned",), False)


def test_a_warned_case_waits_quietly_for_its_deadline():
    assert due(case(deadline_warned=True), "2026-11-27", WARN, OVERDUE) == Due((), False)


def test_a_later_deadline_needs_nothing_yet():
    assert due(case("2026-12-10"), "2026-12-10", WARN, OVERDUE) == Due((), False)


def test_a_passed_deadline_is_overdue_and_leaves_the_index():
    assert due(case("2026-11-25", deadline_warned=True), "2026-11-25", WARN, OVERDUE) == Due(("overdue",), True)


def test_a_deadline_long_past_and_never_warned_gets_both_in_order():
    assert due(case("2020-01-02"), "2020-01-02", WARN, OVERDUE) == Due(("deadline_warned", "overdue"), True)


def test_today_is_warned_but_not_yet_overdue():
    assert due(case("2026-11-26"), "2026-11-26", WARN, OVERDUE) == Due(("deadline_warned",), False)


def test_stale_entries_leave_without_flags():
    for stale in (
        None,  # the case is gone
        case(status="approved"),  # decided
        case(status="supplement_requested"),  # the clock is stopped
        case(deadline="2026-12-10"),  # moved to another day (resubmission, a loaded holiday table)
    ):
        assert due(stale, "2026-11-27", WARN, OVERDUE) == Due((), True)


def test_an_overdue_flag_is_raised_once():
    assert due(case("2026-11-20", deadline_warned=True, overdue=True), "2026-11-20", WARN, OVERDUE) == Due((), True)


def test_a_reviewer_is_warned_the_working_day_before_and_a_case_is_overdue_the_day_after():
    # Friday 27 November 2026: warned of deadlines up to Monday the 30th; overdue up to Thursday.
    assert limits(date(2026, 11, 27)) == ("2026-11-30", "2026-11-26")
    # Wednesday 30 September, before the National Day holidays: warned of deadlines up to 8 October.
    assert limits(date(2026, 9, 30)) == ("2026-10-08", "2026-09-29")
    # Tuesday: the next working day is Wednesday; the deadline day itself is not overdue.
    assert limits(date(2026, 11, 24)) == ("2026-11-25", "2026-11-23")
