"""An operator's view: a submitted case's X-Trace-Id opens in the trace viewer (Zipkin, started by
`make run`/provisioning) in a real headless Chromium, with spans from at least four services."""

from __future__ import annotations

import re
import subprocess
from urllib.parse import urlparse

import pytest
import requests
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

from infra.system import viewer_url
from tests.e2e.conftest import ARTIFACTS, RunningSystem
from tests.e2e.test_case_flow import ALLOWANCE, GOOD_FORM, submit, wait_for_status
from tests.support import eventually

pytestmark = pytest.mark.local_only("uses the local Zipkin viewer (in containers traces go to Jaeger)")

SERVICES = ("yiwang-gateway", "yiwang-intake", "yiwang-approval", "yiwang-notification", "yiwang-catalog")


def traced_services(trace_id: str) -> set[str] | None:
    response = requests.get(f"{viewer_url()}/api/v2/trace/{trace_id}", timeout=5)
    if response.status_code != 200:
        return None
    services = {span.get("localEndpoint", {}).get("serviceName") for span in response.json()}
    return services if len(services & set(SERVICES)) >= 4 else None


def services_on(browser: webdriver.Chrome) -> set[str]:
    text = browser.find_element("tag name", "body").text.lower()
    return {service for service in SERVICES if service in text}


def headless_chromium() -> webdriver.Chrome:
    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # This machine's network is closed: without these Chromium keeps calling home.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-quic",
        "--window-size=1600,2400",
    ):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def test_a_cases_trace_opens_in_the_viewer_with_spans_from_four_services(yiwang: RunningSystem, applicant):
    response = submit(yiwang, applicant, {"item_code": ALLOWANCE, "form": GOOD_FORM})
    assert response.status_code == 201
    trace_id, case_no = response.headers["X-Trace-Id"], response.json()["case_no"]
    wait_for_status(yiwang, applicant, case_no, "approved")
    exported = eventually(lambda: traced_services(trace_id), timeout=30, what="the trace in Zipkin")
    # An operator who has only the case number finds the same trace by its tag (as the README says).
    found = requests.get(
        f"{viewer_url()}/api/v2/traces", params={"annotationQuery": f"case_no={case_no}", "limit": 10}, timeout=10
    ).json()
    assert trace_id in {span["traceId"] for spans in found for span in spans}

    browser = headless_chromium()
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot = ARTIFACTS / f"trace-{trace_id}.png"
    try:
        browser.get(f"{viewer_url()}/zipkin/traces/{trace_id}")
        try:
            shown = WebDriverWait(browser, 45, poll_frequency=1).until(
                lambda b: services_on(b) if len(services_on(b)) >= 4 else None
            )
        finally:
            browser.save_screenshot(str(screenshot))  # kept either way: the artifact an operator would see
            page = browser.find_element("tag name", "body").text
            (ARTIFACTS / f"trace-{trace_id}.txt").write_text(page, encoding="utf-8")
    finally:
        browser.quit()
    assert len(shown) >= 4, shown
    assert shown <= (traced_services(trace_id) or exported)  # what the page shows is what was exported
    # What an operator must never see in a trace.
    assert applicant["id_number"] not in page and applicant["phone"] not in page
    assert re.search(r"intake\.submit_case", page, re.IGNORECASE), "the intake RPC span is listed"


def test_the_viewer_listens_on_loopback_only():
    # Its traces name every case: like the broker and the document server, it is not for the network.
    port = urlparse(viewer_url()).port
    lines = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    addresses = [line.split()[3] for line in lines.splitlines() if line.strip()]
    assert addresses and all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:")) for a in addresses), addresses
