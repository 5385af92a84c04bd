from datetime import date

from services.identity import idnumbers as ids


def test_known_valid_id_number():
    # The standard's own worked example.
    assert ids.id_number_problem("11010519491231002X") is None


def test_wrong_check_digit_is_refused():
    assert "check digit" in ids.id_number_problem("110105194912310021")


def test_impossible_birth_date_is_refused():
    first17 = "11010519491331002"
    assert "birth date" in ids.id_number_problem(first17 + ids.id_check_digit(first17))


def test_derived_attributes():
    number = ids.make_id_number("620524", date(1940, 5, 6), 13)
    assert ids.id_number_problem(number) is None
    assert ids.region_code(number) == "620524"
    assert ids.gender(number) == "male"
    assert ids.age_on(number, date(2026, 5, 5)) == 85
    assert ids.age_on(number, date(2026, 5, 6)) == 86


def test_known_valid_credit_code():
    assert ids.credit_code_problem("91350100M000100Y43") is None


def test_credit_code_with_wrong_check_is_refused():
    assert "check character" in ids.credit_code_problem("91350100M000100Y44")
    assert ids.credit_code_problem("91350100M000100I43") is not None


def test_a_birth_date_is_in_the_future_by_chinas_date(monkeypatch):
    from datetime import UTC, datetime

    class AtOneInTheMorningInBeijing(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 11, 27, 17, 0, tzinfo=UTC).astimezone(tz)  # 28 November in China

    monkeypatch.setattr(ids, "datetime", AtOneInTheMorningInBeijing)
    assert ids.id_number_problem(ids.make_id_number("620524", date(2026, 11, 28), 1)) is None  # born today
    assert "future" in ids.id_number_problem(ids.make_id_number("620524", date(2026, 11, 29), 1))
