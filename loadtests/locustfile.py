"""The Locust suite of the provincial case-handling path: only the public API, FastHttpUser.

    make loadtest                                   # the morning peak, a few minutes, results/<time>/
    make loadtest SHAPE=soak USERS=200 DURATION=600 HOST=http://10.0.0.5:8000
    .venv/bin/locust -f loadtests/locustfile.py --host http://127.0.0.1:8000   # the web UI

Who does what, and how often (a portal's traffic is mostly reads; the weights say so):

- Applicants (20 of every 23 users) register and log in (again every 10 minutes, before their
  token expires), then, per 100 actions: search the
  catalog 16, read a guide 14, ask a question in plain language 6, poll their cases 22, read one
  case 12, read notifications 14, upload a document 4, submit to an automatically decided item
  (秒批) 8, submit to a reviewed item 4. About 1 action in 6 writes (16 of 100).
- Reviewers (2 of 23; staff created by the test through the admin API) list their department's
  tasks and decide: accept, then approve.
- Supervisors (1 of 23) read the supervision summary.

The load shape comes from `YIWANG_LOAD_SHAPE` (see loadtests/shapes.py: peak, soak, spike; or none
for plain -u/-r/-t). Service-level objectives are checked when the run ends (loadtests/slo.py):
a breach makes Locust exit non-zero.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from datetime import date, timedelta
from typing import Any

from locust import between, events, task
from locust.contrib.fasthttp import FastHttpUser
from locust.runners import WorkerRunner

from loadtests import slo
from services.identity.first_admin import first_admin_password
from services.identity.idnumbers import make_id_number

if os.environ.get("YIWANG_LOAD_SHAPE", "none") != "none":
    from loadtests.shapes import ConfiguredShape  # noqa: F401 (Locust finds the shape class here)

AUTO_ITEM = "62052400MZ-GF-0001"  # 高龄津贴申领: rules decide at once
AUTO_FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}
REVIEWED_ITEM = "62052400GA-QR-0001"  # 居民身份证换领: a reviewer decides
REVIEWED_DEPARTMENT = "620524GA"
QUERIES = ["身份证", "高龄津贴", "营业执照", "社保", "残疾人", "食品经营许可", "换领身份证", "老年人补贴"]
QUESTIONS = ["办理高龄津贴需要什么材料", "身份证到期了怎么换", "营业执照多久能办好", "开饭店需要什么许可"]
# The first admin's password: YIWANG_ADMIN_PASSWORD, or the one generated on this machine's first start.
ADMIN = (os.environ.get("YIWANG_ADMIN_USERNAME", "admin"), first_admin_password())
# A tiny valid PNG (the gateway checks the real type from the bytes).
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360000002000154a24f5d0000000049454e44ae426082"
)

_unique = threading.Lock()
_counter = [0]


def next_number() -> int:
    with _unique:
        _counter[0] += 1
        return _counter[0]


# Where this process's citizens start in the space of id numbers a test may use (birth dates over
# ten years, a thousand sequence numbers each): drawn by each process when it makes its first (not
# at import: `locust --processes` imports before it forks, and every child would start alike), so
# runs against the same system and the processes of one run are unlikely to meet; within a process
# the counter makes every one different.
CITIZEN_SPACE = 3650 * 1000
_citizen_base: dict[int, int] = {}  # by process id


def new_citizen() -> dict[str, str]:
    """A citizen over 80 from the seeded county, different from every other of this process (a
    random salt per citizen gave two the same id number a few times in 2,000)."""
    base = _citizen_base.setdefault(os.getpid(), random.SystemRandom().randrange(CITIZEN_SPACE))
    n = (base + next_number()) % CITIZEN_SPACE
    born = date(1930, 1, 1) + timedelta(days=n // 1000)
    return {
        "account_type": "citizen",
        "name": "压测申请人",
        "id_number": make_id_number("620524", born, n % 1000),
        "phone": f"13{n:09d}",
        "password": "load-test-password-1",
    }


# Access tokens live 15 minutes (identity's ACCESS_TOKEN_TTL): a soak outlives them, and every
# request after that was a 401 counted against the system. Users sign in again after 10.
SIGN_IN_AGAIN_AFTER = 600.0


class ApiUser(FastHttpUser):
    abstract = True
    _auth: dict[str, str] = {}
    _credentials: tuple[str, str] | None = None
    _signed_in_at = 0.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        # Each simulated person comes from an address of their own, as behind a real load balancer
        # (the gateway believes X-Forwarded-For only from YIWANG_TRUSTED_PROXIES).
        address = f"10.{random.randrange(256)}.{random.randrange(256)}.{random.randrange(1, 255)}"
        self.default_headers = {"X-Forwarded-For": address}
        super().__init__(*args, **kwargs)

    @property
    def auth(self) -> dict[str, str]:
        """The user's Authorization header, signed in again before its token expires."""
        if self._credentials and time.monotonic() - self._signed_in_at > SIGN_IN_AGAIN_AFTER:
            self.sign_in(*self._credentials)
        return self._auth

    def sign_in(self, username: str, password: str) -> None:
        self._credentials, self._signed_in_at = (username, password), time.monotonic()
        self._auth = self.log_in(username, password)

    def log_in(self, username: str, password: str) -> dict[str, str]:
        with self.client.post(
            "/api/v1/auth/login", json={"username": username, "password": password}, catch_response=True
        ) as response:
            if response.status_code != 200:
                response.failure(f"login {response.status_code}")
                return {}
            return {"Authorization": f"Bearer {response.json()['access_token']}"}

    def staff(self, role: str, department: str | None) -> None:
        """Signed in as a new staff account of this role."""
        admin = self.log_in(*ADMIN)
        username = f"{role[:3]}{uuid.uuid4().hex[:10]}"
        body = {"username": username, "name": "压测员", "password": "load-test-staff-1", "roles": [role]}
        if department:
            body["department_code"] = department
        self.client.post("/api/v1/admin/staff", json=body, headers=admin, name="/api/v1/admin/staff")
        self.sign_in(username, "load-test-staff-1")


class Applicant(ApiUser):
    weight = 20
    wait_time = between(1, 4)

    def on_start(self) -> None:
        person = new_citizen()
        with self.client.post("/api/v1/auth/register", json=person, catch_response=True) as response:
            if response.status_code == 429:
                # Registrations are limited per client address: every user here seems to be one.
                response.failure("register 429: the system does not believe X-Forwarded-For from this load generator")
            elif response.status_code != 201:
                response.failure(f"register {response.status_code}")
        self.sign_in(person["id_number"], person["password"])
        self.cases: list[str] = []
        self.documents: list[str] = []

    @task(16)
    def search(self) -> None:
        self.client.get(f"/api/v1/catalog/items?q={random.choice(QUERIES)}", name="/api/v1/catalog/items?q=")

    @task(14)
    def read_guide(self) -> None:
        code = random.choice([AUTO_ITEM, REVIEWED_ITEM])
        self.client.get(f"/api/v1/catalog/items/{code}", name="/api/v1/catalog/items/{code}")

    @task(6)
    def ask(self) -> None:
        self.client.get(f"/api/v1/catalog/answers?q={random.choice(QUESTIONS)}", name="/api/v1/catalog/answers?q=")

    @task(22)
    def my_cases(self) -> None:
        self.client.get("/api/v1/cases", headers=self.auth)

    @task(12)
    def one_case(self) -> None:
        if self.cases:
            self.client.get(f"/api/v1/cases/{random.choice(self.cases)}", headers=self.auth, name="/api/v1/cases/{no}")

    @task(14)
    def notifications(self) -> None:
        self.client.get("/api/v1/notifications", headers=self.auth)

    @task(4)
    def upload(self) -> None:
        files = {"file": ("photo.png", PNG, "image/png")}
        with self.client.post("/api/v1/documents", files=files, headers=self.auth, catch_response=True) as response:
            if response.status_code == 201:
                self.documents.append(response.json()["document_id"])

    @task(8)
    def submit_auto(self) -> None:
        self._submit({"item_code": AUTO_ITEM, "form": AUTO_FORM}, decided_by_rules=True)

    @task(4)
    def submit_reviewed(self) -> None:
        body: dict[str, Any] = {"item_code": REVIEWED_ITEM, "form": {"reason": "expired"}}
        if self.documents:
            body["materials"] = [{"code": "photo", "document_id": self.documents.pop()}]
        self._submit(body, decided_by_rules=False)

    def _submit(self, body: dict[str, Any], decided_by_rules: bool) -> None:
        name = "/api/v1/cases [秒批]" if decided_by_rules else "/api/v1/cases [reviewed]"
        case_no = None
        with self.client.post("/api/v1/cases", json=body, headers=self.auth, name=name, catch_response=True) as r:
            if r.status_code == 201:
                case_no = r.json()["case_no"]
                self.cases.append(case_no)
        if case_no and decided_by_rules:
            # To whoever judges the run: this process, or a distributed run's master. Outside the
            # request's block, so a message that cannot go leaves the request counted.
            try:
                message = {"case_no": case_no, "auth": self.auth, "login": self._credentials}
                self.environment.runner.send_message(SUBMITTED, message)
            except Exception:
                logging.getLogger(__name__).warning("a submission was not sent to the master", exc_info=True)


class Reviewer(ApiUser):
    weight = 2
    wait_time = between(2, 6)

    def on_start(self) -> None:
        self.staff("reviewer", REVIEWED_DEPARTMENT)

    @task
    def work_the_list(self) -> None:
        with self.client.get("/api/v1/review/tasks", headers=self.auth, catch_response=True) as response:
            tasks = response.json().get("items", []) if response.status_code == 200 else []
        if not tasks:
            return
        first = tasks[0]
        action = "accept" if first["status"] == "submitted" else "approve"
        with self.client.post(
            f"/api/v1/review/cases/{first['case_no']}/decisions",
            json={"action": action, "comment": "压测"},
            headers=self.auth,
            name="/api/v1/review/cases/{no}/decisions",
            catch_response=True,
        ) as response:
            if response.status_code == 409:
                response.success()  # another reviewer took the same case first: that is the contract


class Supervisor(ApiUser):
    weight = 1
    wait_time = between(5, 15)

    def on_start(self) -> None:
        self.staff("supervisor", None)

    @task
    def summary(self) -> None:
        self.client.get("/api/v1/supervision/summary", headers=self.auth)


SUBMITTED = "yiwang_submitted"


@events.init.add_listener
def _gather_submissions(environment: Any, **kwargs: Any) -> None:
    # The users run here (a single process) or in the workers, which send their submissions on.
    if not isinstance(environment.runner, WorkerRunner):
        environment.runner.register_message(
            SUBMITTED,
            lambda environment, msg, **kw: slo.track_submission(
                msg.data["case_no"], msg.data["auth"], msg.data.get("login")
            ),
        )


@events.quitting.add_listener
def _check_objectives(environment: Any, **kwargs: Any) -> None:
    if not isinstance(environment.runner, WorkerRunner):  # a worker sees its own share only
        slo.report(environment)
