"""A first Locust user for the case path (the full suite, shapes and SLOs come with the load-test issue).

.venv/bin/locust -f loadtests/locustfile.py --headless -u 10 -r 2 -t 30s --host http://127.0.0.1:8000
"""

from __future__ import annotations

import uuid
from datetime import date

from locust import between, task
from locust.contrib.fasthttp import FastHttpUser

from services.identity.idnumbers import make_id_number

ALLOWANCE = "62052400MZ-GF-0001"
FORM = {"bank_account": "6222020200112233445", "contact_phone": "13800138000"}


class Applicant(FastHttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        n = uuid.uuid4().int
        body = {
            "account_type": "citizen",
            "name": "压测用户",
            "id_number": make_id_number("620524", date(1940, 1, 1), n % 1000),
            "phone": f"137{n % 10**8:08d}",
            "password": "load-test-password",
        }
        self.client.post("/api/v1/auth/register", json=body, name="/api/v1/auth/register")
        login = self.client.post(
            "/api/v1/auth/login", json={"username": body["phone"], "password": body["password"]}
        ).json()
        self.headers = {"Authorization": f"Bearer {login['access_token']}"}

    @task(5)
    def read_guide(self) -> None:
        self.client.get(f"/api/v1/catalog/items/{ALLOWANCE}", name="/api/v1/catalog/items/{code}")

    @task(1)
    def submit_case(self) -> None:
        self.client.post("/api/v1/cases", json={"item_code": ALLOWANCE, "form": FORM}, headers=self.headers)

    @task(3)
    def my_cases(self) -> None:
        self.client.get("/api/v1/cases", headers=self.headers)
