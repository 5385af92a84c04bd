"""Outbound channels: SMS through an HTTP provider, email over SMTP. Each call answers with an
Outcome and never raises for the provider's own trouble (that is what retries are for)."""

from __future__ import annotations

import contextlib
import smtplib
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formataddr
from typing import Any

import eventlet
import requests
from nameko.extensions import DependencyProvider
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from pydantic import ValidationError

from contracts.notifications import SmsReceipt, SmsRequest
from services.common.telemetry import annotate, client_span
from services.notification.deliveries import Outcome, Policy

QUIT_WAIT = 2.0  # seconds for the SMTP server's answer to QUIT after a message is handed over

_RECEIPT_KINDS = {"accepted": "accepted", "delivered": "delivered", "failed": "permanent"}


class SmsProvider:
    """`POST {base}/v1/messages` (SmsRequest → 202 SmsReceipt), `GET {base}/v1/messages/{id}` (SmsReceipt)."""

    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.session = _session_for(self.base_url)

    def send(self, to: str, text: str, reference: str, timeout: float | None = None) -> Outcome:
        """`timeout`: seconds for this send, when less than the usual will do (a waiting person)."""
        body = SmsRequest(to=to, text=text, reference=reference).model_dump()
        with client_span("sms.send", **{"peer.service": "sms-provider", "delivery.reference": reference}):
            return _traced(self._call("POST", f"{self.base_url}/v1/messages", json=body, timeout=timeout))

    def receipt(self, message_id: str) -> Outcome:
        with client_span("sms.receipt", **{"peer.service": "sms-provider"}):
            return _traced(self._call("GET", f"{self.base_url}/v1/messages/{message_id}"))

    def _call(self, method: str, url: str, timeout: float | None = None, **kwargs: object) -> Outcome:
        try:
            response = self.session.request(method, url, timeout=timeout or self.timeout, **kwargs)
        except requests.RequestException as exc:
            return Outcome("temporary", error=f"SMS provider unreachable: {type(exc).__name__}")
        if response.status_code == 429 or response.status_code >= 500:
            return Outcome("temporary", error=f"SMS provider answered {response.status_code}")
        if response.status_code >= 400:
            return Outcome("permanent", error=f"SMS provider refused: {response.status_code} {response.text[:200]}")
        try:
            receipt = SmsReceipt.model_validate(response.json())
        except (ValueError, ValidationError):
            return Outcome("temporary", error="SMS provider answered something unreadable")
        return Outcome(_RECEIPT_KINDS[receipt.status], reference=receipt.message_id, error=receipt.error)  # type: ignore[arg-type]


def message_id(reference: str) -> str:
    """The email's Message-ID for a delivery: the same for every attempt (RFC 5322 `id-left` is a
    dot-atom, so the reference's colons become dots)."""
    return f"<{reference.replace(':', '.')}@yiwang.local>"


class SmtpMailer:
    """Hands each email to one SMTP server (the relay we are configured with)."""

    def __init__(self, host: str, port: int, sender: str, sender_name: str = "一网通办", timeout: float = 10.0) -> None:
        self.host, self.port, self.timeout = host, port, timeout
        self.sender, self.sender_name = sender, sender_name

    def send(self, to: str, subject: str, body: str, reference: str) -> Outcome:
        message = EmailMessage()
        try:
            message["From"] = formataddr((self.sender_name, self.sender))
            message["To"] = to
            message["Subject"] = subject
            # The same id on every retry of this delivery, so a receiver can drop a repeat (a relay
            # that took it but whose answer was lost, or a process that died before recording the
            # send). Not `make_msgid`: it adds the time, the process and a random number to every call.
            message["Message-ID"] = message_id(reference)
            message["X-Yiwang-Reference"] = reference
            message.set_content(body)
        except ValueError as exc:  # a header that cannot be written (a line break): no retry mends it
            return Outcome("permanent", error=f"the email cannot be written: {exc}")
        with client_span("smtp.send", **{"peer.service": "smtp", "delivery.reference": reference}):
            return _traced(self._send(message))

    def _send(self, message: EmailMessage) -> Outcome:
        # The whole exchange within `timeout`: smtplib's own bounds each read and write, so a relay
        # that answers every step slowly could hold a send (and outlast its claim). Not an OSError,
        # which smtplib would turn into SMTPServerDisconnected.
        bound = eventlet.Timeout(self.timeout)
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            try:
                smtp.send_message(message)
            except BaseException:
                smtp.close()
                raise
        except eventlet.Timeout as exc:
            if exc is not bound:
                raise
            return Outcome("temporary", error=f"SMTP exchange not over after {self.timeout:g} s")
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            kind = "temporary" if all(400 <= c < 500 for c in codes) else "permanent"
            return Outcome(kind, error=f"recipient refused: {codes}")
        except smtplib.SMTPResponseException as exc:
            kind = "temporary" if 400 <= exc.smtp_code < 500 else "permanent"
            return Outcome(kind, error=f"SMTP {exc.smtp_code}")
        except (OSError, smtplib.SMTPException) as exc:
            return Outcome("temporary", error=f"SMTP server unreachable: {type(exc).__name__}")
        finally:
            bound.cancel()
        # Handed over: saying goodbye is a courtesy, and its answer (or none) changes nothing.
        with contextlib.suppress(OSError, smtplib.SMTPException), eventlet.Timeout(QUIT_WAIT, False):
            smtp.quit()
        smtp.close()
        return Outcome("delivered", reference=message["Message-ID"])


def _session_for(base_url: str) -> requests.Session:
    """A session with the environment's proxy, CA bundle and netrc settings for `base_url` read
    once: requests reads them on every call otherwise (scanning the environment for proxies was a
    twentieth of the notification service's CPU under load). A change to them takes a restart."""
    session = requests.Session()
    settings = session.merge_environment_settings(base_url, {}, None, None, None)
    session.proxies.update(settings["proxies"])
    session.verify = settings["verify"]
    session.auth = requests.utils.get_netrc_auth(base_url)
    session.trust_env = False
    return session


def _traced(outcome: Outcome) -> Outcome:
    """Mark the current span with the outcome: a failed send is an error of that span."""
    annotate(outcome=outcome.kind)
    if outcome.kind in ("temporary", "permanent"):
        trace.get_current_span().set_status(Status(StatusCode.ERROR, outcome.error))
    return outcome


@dataclass(frozen=True)
class OutboundChannels:
    sms: SmsProvider
    email: SmtpMailer
    policy: Policy
    rate_limits: dict[str, int]  # sends per second per channel, across all processes
    # Deliveries in flight per process. More keeps up with a higher load but sends in bursts that
    # lengthen other requests' tails when the machine is busy (10 missed submit p99 at 10 cases/s).
    concurrency: int = 4


class Outbound(DependencyProvider):
    """Builds the channels from the service's config (see config.yml, NOTIFY)."""

    def setup(self) -> None:
        settings: dict[str, Any] = self.container.config.get("NOTIFY") or {}
        self.channels = OutboundChannels(
            sms=SmsProvider(str(settings.get("SMS_PROVIDER_URL", "http://127.0.0.1:8025"))),
            email=SmtpMailer(
                str(settings.get("SMTP_HOST", "127.0.0.1")),
                int(settings.get("SMTP_PORT", 1025)),
                str(settings.get("MAIL_FROM", "noreply@yiwang.local")),
            ),
            policy=Policy(
                retry_base=float(settings.get("RETRY_BASE_SECONDS", 2)),
                retry_cap=float(settings.get("RETRY_CAP_SECONDS", 300)),
                max_attempts=int(settings.get("MAX_ATTEMPTS", 10)),
            ),
            rate_limits={
                "sms": int(settings.get("SMS_PER_SECOND", 50)),
                "email": int(settings.get("EMAIL_PER_SECOND", 20)),
            },
            concurrency=int(settings.get("DELIVERY_CONCURRENCY", 4)),
        )

    def get_dependency(self, worker_ctx: Any) -> OutboundChannels:
        return self.channels
