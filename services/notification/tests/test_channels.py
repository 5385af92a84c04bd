"""The SMS provider's session reads the environment's proxy and CA settings once, at start, and
then as requests itself would have on every call."""

from __future__ import annotations

import pytest

from services.notification.channels import SmsProvider

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
