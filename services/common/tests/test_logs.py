import io
import logging
import sys
from datetime import date
from pathlib import Path

import pytest

from services.common.logs import ScrubbingFilter, TraceContextFilter, scrub
from services.identity.idnumbers import make_credit_code, make_id_number
from services.identity.tokens import issue_access_token, new_signing_key

ID_NUMBER = make_id_number("620524", date(1940, 5, 6), 13)
ID_NUMBER_X = "11010519491231002X"
CREDIT_CODE = make_credit_code("91620524MA0000001")
PHONE = "13800138000"
CASE_NO = "620524MZ-20261123-000007"
ITEM_CODE = "62052400MZ-GF-0001"


@pytest.fixture(scope="module")
def jwt_token():
    user = {"_id": "u1", "account_type": "citizen", "roles": ["applicant"]}
    return issue_access_token(new_signing_key(), user, "s1")[0]


# --- scrub --------------------------------------------------------------------------------------


def test_id_number_is_masked():
    assert scrub(f"registered {ID_NUMBER} ok") == "registered [id-number] ok"


@pytest.mark.parametrize("number", [ID_NUMBER_X, ID_NUMBER_X.lower()])
def test_id_number_with_check_character_x_is_masked(number):
    assert scrub(f"id={number}") == "id=[id-number]"


def test_credit_code_is_masked():
    assert CREDIT_CODE.startswith("91620524MA")
    assert scrub(f"enterprise {CREDIT_CODE} registered") == "enterprise [credit-code] registered"


def test_phone_is_masked():
    assert scrub(f"sms to {PHONE} sent") == "sms to [phone] sent"


def test_jwt_is_masked(jwt_token):
    assert scrub(f"Authorization: Bearer {jwt_token}") == "Authorization: Bearer [token]"


def test_personal_data_inside_json_and_chinese_text_is_masked():
    text = f'{{"id_number": "{ID_NUMBER}", "phone": "{PHONE}"}} 申请人{ID_NUMBER}，电话{PHONE}。'
    scrubbed = scrub(text)
    assert ID_NUMBER not in scrubbed
    assert PHONE not in scrubbed
    assert scrubbed == '{"id_number": "[id-number]", "phone": "[phone]"} 申请人[id-number]，电话[phone]。'


def test_every_occurrence_is_masked():
    assert scrub(f"{PHONE},{PHONE};{ID_NUMBER}") == "[phone],[phone];[id-number]"


@pytest.mark.parametrize(
    "text",
    [
        CASE_NO,
        f"case {CASE_NO} approved",
        ITEM_CODE,
        "620524MZ",
        "event_id 3f2a9c0e4b7d4f0e9a1b2c3d4e5f6a7b",
        "2026-11-23T02:00:00+00:00",
        "took 13800 ms",
    ],
)
def test_case_numbers_and_other_identifiers_are_untouched(text):
    assert scrub(text) == text


def test_longer_digit_runs_are_not_mistaken_for_phones_or_id_numbers():
    bank_account = "6222020200112233445"  # 19 digits
    assert scrub(f"account {bank_account}") == f"account {bank_account}"
    assert scrub(f"x{PHONE}0") == f"x{PHONE}0"


def test_scrub_of_clean_text_is_the_identity():
    assert scrub("") == ""
    assert scrub("event dead-lettered") == "event dead-lettered"


# --- the logging filter -------------------------------------------------------------------------


@pytest.fixture
def captured():
    """A logger whose only handler scrubs like config.yml's console handler."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    handler.addFilter(ScrubbingFilter())
    logger = logging.getLogger("yiwang.test.logs")
    logger.handlers, logger.propagate, logger.level = [handler], False, logging.DEBUG
    yield logger, stream
    logger.handlers, logger.propagate = [], True


def test_filter_scrubs_the_message_and_its_arguments(captured):
    logger, stream = captured
    logger.info("login of %s from %s failed", ID_NUMBER, PHONE)
    assert stream.getvalue() == "INFO login of [id-number] from [phone] failed\n"


def test_filter_never_drops_a_record(captured):
    logger, stream = captured
    logger.warning("nothing personal")
    assert stream.getvalue() == "WARNING nothing personal\n"
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "m", None, None)
    assert ScrubbingFilter().filter(record) is True


def test_filter_scrubs_exception_text(captured):
    logger, stream = captured
    try:
        raise ValueError(f"no user with id number {ID_NUMBER} and phone {PHONE}")
    except ValueError:
        logger.exception("lookup of %s failed", CREDIT_CODE)
    output = stream.getvalue()
    assert "Traceback" in output
    assert "ValueError: no user with id number [id-number] and phone [phone]" in output
    assert "lookup of [credit-code] failed" in output
    for secret in (ID_NUMBER, PHONE, CREDIT_CODE):
        assert secret not in output


def test_filter_scrubs_exception_text_formatted_earlier():
    try:
        raise RuntimeError(f"token {PHONE}")
    except RuntimeError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", None, sys.exc_info())
    record.exc_text = logging.Formatter().formatException(record.exc_info)  # another handler got there first
    ScrubbingFilter().filter(record)
    assert PHONE not in record.exc_text
    assert "RuntimeError: token [phone]" in record.exc_text


def test_filter_leaves_a_broken_format_string_to_logging():
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "%d items", ("many",), None)
    assert ScrubbingFilter().filter(record) is True
    assert (record.msg, record.args) == ("%d items", ("many",))


def test_structured_extras_are_kept(captured):
    logger, stream = captured
    logger.handlers[0].setFormatter(logging.Formatter("%(queue)s %(message)s"))
    logger.error("event dead-lettered", extra={"queue": "evt-intake--case.submitted.v1"})
    assert stream.getvalue() == "evt-intake--case.submitted.v1 event dead-lettered\n"


def test_config_installs_the_filter_on_the_console_handler():
    import yaml

    with open(Path(__file__).parents[3] / "config.yml", encoding="utf-8") as fh:
        logging_config = yaml.safe_load(fh)["LOGGING"]
    assert logging_config["filters"]["scrub"]["()"] == "services.common.logs.ScrubbingFilter"
    assert logging_config["filters"]["trace"]["()"] == "services.common.logs.TraceContextFilter"
    for handler in logging_config["handlers"].values():
        assert "scrub" in handler["filters"]


def test_phone_with_the_country_code_is_masked():
    assert PHONE not in scrub(f"sms to +86{PHONE} failed")


def test_email_addresses_are_masked_but_broker_addresses_are_not():
    assert scrub("mail to zhang.san@example.com.cn bounced") == "mail to [email] bounced"
    assert (
        scrub("Connected to amqp://guest:**@127.0.0.1:5672/yiwang")
        == "Connected to amqp://guest:**@127.0.0.1:5672/yiwang"
    )


def test_personal_data_in_extra_fields_is_masked(captured):
    logger, stream = captured
    logger.handlers[0].setFormatter(logging.Formatter("%(who)s %(message)s"))
    logger.warning("lookup failed", extra={"who": f"{PHONE}/{ID_NUMBER}"})
    assert stream.getvalue() == "[phone]/[id-number] lookup failed\n"


def _json_logger_from_config():
    """The console handler exactly as config.yml builds it, writing into a string."""
    import logging.config

    import yaml

    with open(Path(__file__).parents[3] / "config.yml", encoding="utf-8") as fh:
        config = yaml.safe_load(fh)["LOGGING"]
    config["root"]["level"] = "INFO"
    stream = io.StringIO()
    config["handlers"]["console"]["stream"] = stream
    config["loggers"] = {"yiwang.test.json": {"level": "INFO"}}
    logging.config.dictConfig(config)
    return logging.getLogger("yiwang.test.json"), stream


@pytest.fixture
def restored_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers, root.level = handlers, level


def test_log_lines_are_json_with_the_trace_and_span_they_were_written_in(restored_logging):
    import json

    from opentelemetry.sdk.trace import TracerProvider

    logger, stream = _json_logger_from_config()
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("work") as span:
        logger.warning("case %s stuck for %s", CASE_NO, PHONE, extra={"event_id": "e1"})
        context = span.get_span_context()
    from opentelemetry import context as otel_context

    token = otel_context.attach(otel_context.Context())  # no span, whatever earlier tests left current
    try:
        logger.info("outside any span")
    finally:
        otel_context.detach(token)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["message"] == f"case {CASE_NO} stuck for [phone]"
    assert first["level"] == "WARNING" and first["logger"] == "yiwang.test.json" and first["event_id"] == "e1"
    assert first["trace_id"] == format(context.trace_id, "032x")
    assert first["span_id"] == format(context.span_id, "016x")
    assert "time" in first and "service" in first
    assert second["trace_id"] is None


def test_a_traceback_in_a_json_line_is_masked_too(restored_logging):
    # python-json-logger formats the exception again from the record, not from the masked text.
    import json

    logger, stream = _json_logger_from_config()
    try:
        raise RuntimeError(f"could not count a failure of account:{ID_NUMBER} ({PHONE})")
    except RuntimeError:
        logger.exception("counting failed")
    line = json.loads(stream.getvalue())
    assert ID_NUMBER not in stream.getvalue() and PHONE not in stream.getvalue()
    assert "account:[id-number] ([phone])" in line["exc_info"]


def test_a_url_keeps_its_route_when_an_at_sign_comes_after_its_host():
    # The gateway's request spans carry the whole URL; an email in the query is not a password.
    url = "http://127.0.0.1:8000/api/v1/catalog/items?q=zhang.san@example.cn"
    assert scrub(url) == "http://127.0.0.1:8000/api/v1/catalog/items?q=[email]"


def test_a_password_in_a_url_is_masked_as_kombu_masks_it():
    assert scrub("amqp://yiwang:S3cret-pw@rabbitmq:5672/yiwang") == "amqp://yiwang:**@rabbitmq:5672/yiwang"
    assert scrub("amqp://guest:guest@10.0.3.7:5672/") == "amqp://guest:**@10.0.3.7:5672/"
    assert scrub("mongodb://app:p%40ss@db:27017/intake") == "mongodb://app:**@db:27017/intake"


# --- trace context ------------------------------------------------------------------------------


def _record(**extra):
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "message", None, None)
    record.__dict__.update(extra)
    return record


def test_outside_a_span_a_line_keeps_the_trace_it_names():
    record = _record(trace_id="ab" * 16)
    TraceContextFilter().filter(record)
    assert record.trace_id == "ab" * 16 and record.span_id is None


def test_inside_a_span_the_current_trace_wins():
    from opentelemetry.sdk.trace import TracerProvider

    with TracerProvider().get_tracer("t").start_as_current_span("s") as span:
        record = _record(trace_id="ab" * 16)
        TraceContextFilter().filter(record)
    assert record.trace_id == format(span.get_span_context().trace_id, "032x")
    assert record.span_id == format(span.get_span_context().span_id, "016x")


def test_outside_a_span_a_line_naming_no_trace_has_none():
    record = _record()
    TraceContextFilter().filter(record)
    assert record.trace_id is None and record.span_id is None


def test_a_trace_id_that_happens_to_hold_a_phone_number_is_not_scrubbed():
    trace_id = "ab13800138000cd" + "0" * 17  # 32 hex digits, eleven of them reading as a phone
    record = _record(trace_id=trace_id, span_id="13800138000abcde", note="call 13800138000")
    ScrubbingFilter().filter(record)
    TraceContextFilter().filter(record)
    assert record.trace_id == trace_id and record.note == "call [phone]"
