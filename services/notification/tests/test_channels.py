"""The SMS provider's session reads the environment's proxy and CA settings once, at start, and
then as requests itself would have on every call; an SMTP exchange is bounded as a whole."""

from __future__ import annotations

import contextlib
import time

import eventlet
import pytest

from services.notification.channels import SmsProvider, SmtpMailer
from services.notification.deliveries import Outcome

PROXY = "http://proxy.gov.example:3128"


@pytest.fixture
def environment(monkeypatch):
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    monkeypatch.setenv("NETRC", "/nonexistent/netrc")
    return monkeypatch


def proxies_of_a_call(provider: SmsProvider, url: str) -> dict:
    # What a call sends with (requests merges the session's settings and, if it trusts it, the environment's).
    return provider.session.merge_environment_settings(url, {}, None, None, None)["proxies"]


def test_the_environment_proxy_is_kept_for_every_call(environment):
    environment.setenv("HTTP_PROXY", PROXY)
    provider = SmsProvider("http://sms.gov.example")
    environment.delenv("HTTP_PROXY")  # read at start: later calls do not read the environment again
    assert not provider.session.trust_env
    assert proxies_of_a_call(provider, "http://sms.gov.example/v1/messages")["http"] == PROXY


def test_a_provider_the_environment_exempts_goes_direct(environment):
    environment.setenv("HTTP_PROXY", PROXY)
    environment.setenv("NO_PROXY", "127.0.0.1,localhost")
    provider = SmsProvider("http://127.0.0.1:8025")
    assert "http" not in proxies_of_a_call(provider, "http://127.0.0.1:8025/v1/messages")


def test_the_environment_ca_bundle_is_kept(environment):
    environment.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/gov-ca.pem")
    assert SmsProvider("https://sms.gov.example").session.verify == "/etc/ssl/gov-ca.pem"
    environment.delenv("REQUESTS_CA_BUNDLE")
    assert SmsProvider("https://sms.gov.example").session.verify is True


def test_an_emails_message_id_is_the_same_on_every_attempt_of_its_delivery(monkeypatch):
    # A relay that took it but whose answer was lost gets it again: the receiver drops the repeat.
    sent = []
    mailer = SmtpMailer("127.0.0.1", 25, "noreply@yiwang.local")
    monkeypatch.setattr(mailer, "_send", lambda message: sent.append(message) or Outcome("delivered"))
    for _ in range(2):
        mailer.send("a@example.com", "主题", "正文", "n-1:email")
    mailer.send("a@example.com", "主题", "正文", "n-2:email")
    ids = [message["Message-ID"] for message in sent]
    assert ids[0] == ids[1] == "<n-1.email@yiwang.local>" and ids[2] == "<n-2.email@yiwang.local>"


def test_an_email_whose_subject_cannot_be_written_fails_at_once(monkeypatch):
    # A carriage return cannot be in a header: before, the exception left the entry claimed, to be
    # tried ten times over ten minutes and then failed as "ended without an outcome".
    mailer = SmtpMailer("127.0.0.1", 25, "noreply@yiwang.local")
    monkeypatch.setattr(mailer, "_send", lambda message: pytest.fail("an unwritable email was sent"))
    outcome = mailer.send("a@example.com", "高龄津贴\r申领", "正文", "n-1:email")
    assert outcome.kind == "permanent" and "cannot be written" in outcome.error


def test_an_smtp_relay_that_answers_slowly_is_given_up_on_within_the_timeout():
    # A banner of continuation lines, a byte at a time: each read is well within smtplib's own
    # timeout, so only a bound on the whole exchange ends it (else the relay closes after 10 s).
    listener = eventlet.listen(("127.0.0.1", 0))

    def relay() -> None:
        sock, _ = listener.accept()
        with contextlib.suppress(OSError):
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                for byte in b"220-relay.gov.example slowly\r\n":
                    sock.sendall(bytes([byte]))
                    eventlet.sleep(0.01)
        sock.close()

    serving = eventlet.spawn(relay)
    mailer = SmtpMailer("127.0.0.1", listener.getsockname()[1], "noreply@yiwang.local", timeout=0.5)
    outcome = mailer.send("zhang@example.cn", "主题", "正文", "n1:email")
    assert (outcome.kind, outcome.error) == ("temporary", "SMTP exchange not over after 0.5 s")
    serving.kill()
    listener.close()
