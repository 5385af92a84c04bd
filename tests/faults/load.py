"""A steady submission load over HTTP that behaves like a careful portal: every submission carries
its own Idempotency-Key and is retried with the same key until it gets an answer, so that what
the system accepted can be checked against what it stored."""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field

import requests

from services.catalog.seed_data import REGION, REGION_NAME

ITEM = f"{REGION}00SC-XK-0001"  # 企业名称自主申报: decided by rules at once, issues a certificate
CLIENT_TIMEOUT = 15.0  # seconds a portal waits for one answer before it retries
GIVE_UP_AFTER = 90.0


@dataclass
class Submission:
    key: str
    applicant: str  # the bearer token's owner
    started: float
    statuses: list[int] = field(default_factory=list)
    answered_in: list[float] = field(default_factory=list)  # seconds per attempt that got an answer
    case_no: str | None = None
    accepted_at: float | None = None


@dataclass
class Load:
    """`clients` threads (green ones under `nameko test`) submitting until `stop()`."""

    base_url: str
    applicants: list[dict[str, str]]
    pause: float = 0.2
    submissions: list[Submission] = field(default_factory=list)
    errors: Counter = field(default_factory=Counter)  # transport errors by kind
    _stopping: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> Load:
        for applicant in self.applicants:
            thread = threading.Thread(target=self._client, args=(applicant,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def stop(self) -> None:
        """Stop starting new submissions; those under way are carried to an answer first."""
        self._stopping.set()
        for thread in self._threads:
            thread.join(timeout=GIVE_UP_AFTER + CLIENT_TIMEOUT)

    def _client(self, applicant: dict[str, str]) -> None:
        session = requests.Session()
        session.headers["Authorization"] = f"Bearer {applicant['token']}"
        while not self._stopping.is_set():
            self._submit(session, applicant["user_id"])
            time.sleep(self.pause)

    def _submit(self, session: requests.Session, user_id: str) -> None:
        submission = Submission(key=uuid.uuid4().hex, applicant=user_id, started=time.monotonic())
        self.submissions.append(submission)
        name = f"{REGION_NAME}{submission.key[:8]}科技有限公司"
        body = {"item_code": ITEM, "form": {"proposed_name": name, "industry": "软件"}}
        while time.monotonic() - submission.started < GIVE_UP_AFTER:
            sent = time.monotonic()
            try:
                response = session.post(
                    f"{self.base_url}/api/v1/cases",
                    json=body,
                    headers={"Idempotency-Key": submission.key},
                    timeout=CLIENT_TIMEOUT,
                )
            except requests.RequestException as exc:
                self.errors[type(exc).__name__] += 1
                time.sleep(0.5)
                continue
            submission.statuses.append(response.status_code)
            submission.answered_in.append(time.monotonic() - sent)
            if response.status_code in (200, 201):
                submission.case_no = response.json()["case_no"]
                submission.accepted_at = time.monotonic()
                return
            if response.status_code < 500 and response.status_code != 429:
                return  # refused for a reason of its own: not retried, reported by the audit
            time.sleep(min(float(response.headers.get("Retry-After", 1)), 1.0))

    # --- what happened, from the outside ------------------------------------------------------------
    def accepted(self) -> list[Submission]:
        return [s for s in self.submissions if s.case_no]

    def statuses(self) -> Counter:
        return Counter(status for s in self.submissions for status in s.statuses)

    def recovery_after(self, moment: float) -> float | None:
        """Seconds from `moment` until the first submission after it was accepted."""
        later = [s.accepted_at for s in self.submissions if s.accepted_at and s.accepted_at >= moment]
        return min(later) - moment if later else None
