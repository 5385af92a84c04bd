"""Faults under a steady submission load: the broker restarted, each process killed, the document
server killed, latency and connection resets between the services and the broker or the store.
Afterwards every case that got a 201 must exist, be decided and be notified exactly once per event
and recipient; nothing may exist twice; no answer may be a 5xx other than 503."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import requests

from infra import system
from services.catalog.seed_data import REGION_NAME
from services.common.rpc import DEFAULT_TIMEOUT
from tests.faults.audit import Figures, audit
from tests.faults.conftest import FIGURES, FaultySystem
from tests.faults.load import ITEM, Load

pytestmark = pytest.mark.timeout(900)

# What an automatically approved case of the load's item notifies its applicant of.
NOTICES = {"case.submitted.v1", "case.approved.v1", "identity.certificate_issued.v1"}
RECOVERY_LIMIT = 30.0  # seconds from a component's return until cases are accepted again
WARM_UP, AFTERMATH = 3.0, 4.0  # seconds of load before a fault and after recovery


@pytest.fixture
def under_load(faulty: FaultySystem) -> Iterator[Load]:
    load = Load(faulty.base_url, faulty.applicants(3)).start()
    time.sleep(WARM_UP)
    yield load
    load.stop()


def wait_ready(faulty: FaultySystem, what: str, timeout: float = RECOVERY_LIMIT) -> None:
    """infra.system's wait for /readyz (it names what /readyz last said, or a process that died);
    CI keeps only the test's output, so the processes' last complaints go with a timeout."""
    try:
        system.wait_ready(faulty.running, timeout)
    except TimeoutError as timed_out:
        raise AssertionError(f"{what}: {timed_out}\n{recent_complaints(faulty.running.log_dir)}") from None


COMPLAINTS = ('"level": "WARNING"', '"level": "ERROR"')


def recent_complaints(log_dir: Path, per_log: int = 5) -> str:
    """The last warnings and errors of each process's log (JSON lines), shortened."""
    lines = []
    for log in sorted(log_dir.glob("*.log")):
        text = log.read_text(errors="replace")
        complaints = [line[:400] for line in text.splitlines() if any(level in line for level in COMPLAINTS)]
        lines += [f"{log.name}: {line}" for line in complaints[-per_log:]]
    return "\n".join(lines) or "(no warnings or errors in the processes' logs)"


def finish(fault: str, faulty: FaultySystem, load: Load, recovered_at: float) -> Figures:
    """Keep the load on a little after recovery, stop it, audit, and hold the figures to the promise."""
    time.sleep(AFTERMATH)
    load.stop()
    figures = audit(fault, load, faulty.store, NOTICES)
    figures.recovery_seconds = load.recovery_after(recovered_at)
    FIGURES.append(figures)
    print(figures.line())
    assert figures.accepted > 0, figures.line()
    assert figures.lost == 0, figures.line()
    assert figures.duplicated == 0, figures.line()
    assert figures.undecided == 0, figures.line()
    assert [n for n in figures.notes if not n.startswith("refused")] == [], figures.line()
    assert figures.answered_5xx_other == 0, figures.line()
    assert figures.recovery_seconds is not None and figures.recovery_seconds <= RECOVERY_LIMIT, figures.line()
    return figures


def probe(faulty: FaultySystem, token: str) -> tuple[int, float, str | None]:
    """One submission attempt while something is down: its status, how long the answer took, and
    its Retry-After."""
    sent = time.monotonic()
    response = requests.post(
        f"{faulty.base_url}/api/v1/cases",
        json={"item_code": ITEM, "form": {"proposed_name": f"{REGION_NAME}探针科技有限公司", "industry": "软件"}},
        headers={"Authorization": f"Bearer {token}"},
        timeout=30,
    )
    return response.status_code, time.monotonic() - sent, response.headers.get("Retry-After")


def assert_told_unavailable(answers: list[tuple[int, float, str | None]], within: float, while_broker: str) -> None:
    """While the broker is away the gateway says so (503 + Retry-After) in bounded time, it does not hang."""
    for status, seconds, retry_after in answers:
        assert status == 503 and retry_after, answers
        assert seconds < within, f"an answer took {seconds:.1f}s while the broker was {while_broker}: {answers}"


def test_broker_restart(faulty: FaultySystem, under_load: Load) -> None:
    token = faulty.applicants(1)[0]["token"]
    faulty.broker.stop()
    # While the broker is away the gateway says so at once (503 + Retry-After), it does not hang.
    answers = [probe(faulty, token) for _ in range(3)]
    faulty.broker.start()
    back = time.monotonic()
    wait_ready(faulty, "/readyz after the broker's return")
    assert_told_unavailable(answers, within=12, while_broker="down")
    figures = finish("broker restarted", faulty, under_load, back)
    figures.notes.append(f"503 answers while down took {max(s for _, s, _ in answers):.1f} s at most")


SILENT_BROKER_ANSWER = 12.0  # s, as for a broker that is down: the RPC timeout's bound


def test_broker_silent(faulty: FaultySystem, under_load: Load) -> None:
    token = faulty.applicants(1)[0]["token"]
    faulty.toxiproxy.black_hole("amqp")
    # A silent broker (its host gone without a reset) is not waited on for ever: a caller hears
    # 503 in bounded time, though the silence lasts longer.
    try:
        answers = [probe(faulty, token)]
        time.sleep(max(0.0, SILENT_BROKER_ANSWER + 5 - answers[0][1]))
    finally:
        faulty.toxiproxy.remove_toxics("amqp")  # even when the probe hangs: the next tests need it
    back = time.monotonic()
    wait_ready(faulty, "/readyz after the broker spoke again")
    assert_told_unavailable(answers, within=SILENT_BROKER_ANSWER, while_broker="silent")
    figures = finish("broker silent", faulty, under_load, back)
    figures.notes.append(f"the answer while silent took {answers[0][1]:.1f} s")


@pytest.mark.parametrize("process", list(system.PROCESSES))
def test_process_killed(faulty: FaultySystem, under_load: Load, process: str) -> None:
    faulty.running.processes[process].kill()  # SIGKILL: in-flight work is simply gone
    faulty.running.processes[process].wait()
    system.spawn(faulty.running, process)
    back = time.monotonic()
    wait_ready(faulty, f"/readyz after {process} came back", timeout=60)
    finish(f"{process} killed", faulty, under_load, back)


def test_document_server_killed(faulty: FaultySystem, under_load: Load) -> None:
    faulty.docserver.crash()
    time.sleep(2)
    faulty.docserver.start()
    back = time.monotonic()
    wait_ready(faulty, "/readyz after the document server's return")
    finish("document server killed", faulty, under_load, back)


NETWORK_FAULTS: dict[str, Callable[[FaultySystem], None]] = {
    "latency to the broker": lambda f: _latency(f, "amqp"),
    "latency to the store": lambda f: _latency(f, "mongo"),
    "connections to the broker reset": lambda f: f.toxiproxy.reset_connections("amqp"),
    "connections to the store reset": lambda f: f.toxiproxy.reset_connections("mongo"),
    "the store silent": lambda f: _silence(f, "mongo"),
}


def _silence(faulty: FaultySystem, proxy: str) -> None:
    faulty.toxiproxy.black_hole(proxy)
    # Longer than a caller waits for an RPC answer: some hear 503 for work that gets done, and
    # their retries (same key) must find it, not do it again.
    time.sleep(DEFAULT_TIMEOUT + 2)
    faulty.toxiproxy.remove_toxics(proxy)


def _latency(faulty: FaultySystem, proxy: str) -> None:
    faulty.toxiproxy.add_latency(proxy, milliseconds=200, jitter=100)
    time.sleep(6)
    faulty.toxiproxy.remove_toxics(proxy)


@pytest.mark.parametrize("fault", list(NETWORK_FAULTS))
def test_network_fault(faulty: FaultySystem, under_load: Load, fault: str) -> None:
    NETWORK_FAULTS[fault](faulty)
    back = time.monotonic()
    wait_ready(faulty, f"/readyz after {fault}")
    finish(fault, faulty, under_load, back)
