"""National identifier check characters: GB 11643 (resident id) and GB 32100 (credit code)."""

from __future__ import annotations

from datetime import date, datetime

from services.common.china_time import CHINA

_ASCII_DIGITS = frozenset("0123456789")
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"

_CREDIT_CHARSET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_CREDIT_WEIGHTS = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)


def id_check_digit(first17: str) -> str:
    total = sum(int(c) * w for c, w in zip(first17, _ID_WEIGHTS, strict=True))
    return _ID_CHECK[total % 11]


def id_number_problem(id_number: str) -> str | None:
    """None when valid, else what is wrong (for a 422 detail)."""
    # ASCII only: str.isdigit() also accepts full-width and superscript digits.
    if len(id_number) != 18 or not set(id_number[:17]) <= _ASCII_DIGITS or id_number[17] not in "0123456789X":
        return "must be 17 digits followed by a digit or X"
    try:
        birth_date(id_number)
    except ValueError:
        return "the birth date in it is not a real date"
    if birth_date(id_number) > datetime.now(CHINA).date():  # a birth date is a date in China
        return "the birth date in it is in the future"
    if id_check_digit(id_number[:17]) != id_number[17]:
        return "check digit does not match (GB 11643)"
    return None


def birth_date(id_number: str) -> date:
    return date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))


def gender(id_number: str) -> str:
    return "male" if int(id_number[16]) % 2 else "female"


def region_code(id_number: str) -> str:
    return id_number[:6]


def age_on(id_number: str, today: date) -> int:
    born = birth_date(id_number)
    return today.year - born.year - ((today.month, today.day) < (born.month, born.day))


def make_id_number(region: str, born: date, sequence: int) -> str:
    """A well-formed id number (for seeds and tests): region(6) + birth date(8) + sequence(3) + check."""
    first17 = f"{region}{born:%Y%m%d}{sequence % 1000:03d}"
    return first17 + id_check_digit(first17)


def credit_check_char(first17: str) -> str:
    total = sum(_CREDIT_CHARSET.index(c) * w for c, w in zip(first17, _CREDIT_WEIGHTS, strict=True))
    return _CREDIT_CHARSET[(31 - total % 31) % 31]


def credit_code_problem(code: str) -> str | None:
    if len(code) != 18 or any(c not in _CREDIT_CHARSET for c in code):
        return f"must be 18 characters of {_CREDIT_CHARSET}"
    if credit_check_char(code[:17]) != code[17]:
        return "check character does not match (GB 32100)"
    return None


def make_credit_code(first17: str) -> str:
    return first17 + credit_check_char(first17)
