"""Infrastructure of the fault tests' own, so that they can break it: a RabbitMQ node, a document
server and a Toxiproxy between them and the services. Started with the same scripts as `make run`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import requests

from infra.system import ROOT
from tests.support import create_vhost, delete_vhost, eventually, free_port

SCRIPT_TIMEOUT = 240  # a cold start may build the document server first


def _script(name: str, command: str, env: dict[str, str]) -> str:
    done = subprocess.run(
        ["bash", str(ROOT / "infra" / name), command],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=SCRIPT_TIMEOUT,
    )
    if done.returncode != 0:
        raise RuntimeError(f"infra/{name} {command} failed:\n{done.stderr[-3000:]}")
    return done.stdout.strip()


class Broker:
    """A RabbitMQ node of its own (not the one the other tests share): restarting it breaks nobody
    else. Its queues and messages are durable, so a restart must lose nothing."""

    NODE = "yiwangfaults"

    def __init__(self) -> None:
        # Fixed ports: a node left running by an interrupted run is then reused, not in the way.
        self.amqp_port = int(os.environ.get("YIWANG_FAULTS_AMQP_PORT", "5682"))
        self.mgmt_port = int(os.environ.get("YIWANG_FAULTS_RABBIT_MGMT_PORT", "15682"))
        self.vhost = ""  # create_vhost() makes one
        self.env = {
            "YIWANG_RABBIT_NODENAME": self.NODE,
            "YIWANG_AMQP_PORT": str(self.amqp_port),
            "YIWANG_RABBIT_MGMT_PORT": str(self.mgmt_port),
        }

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.mgmt_port}/api"

    def start(self) -> None:
        _script("rabbitmq.sh", "start", self.env)

    def stop(self) -> None:
        _script("rabbitmq.sh", "stop", self.env)

    def create_vhost(self) -> None:
        self.vhost = create_vhost("faults", self.api)

    def delete_vhost(self) -> None:
        if self.vhost:
            delete_vhost(self.vhost, self.api)


class DocumentServer:
    """A document server of its own on a free port, with its data in the test's folder. Its pid,
    lock, log and socket files go to a directory of its own, removed by `close` (in the shared state
    directory every run left two files named after its port), and its log to `log_path`, the
    logs of a server that crashed and was started again included (a start begins its log anew)."""

    def __init__(self, data_dir: Path, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        # Under /tmp, short: a Unix socket's path has at most 107 bytes, a checkout's may be longer.
        self.state_dir = Path(tempfile.mkdtemp(prefix="yiwang-faults-"))
        self.env = {
            "YIWANG_MONGO_PORT": str(self.port),
            "YIWANG_DOCSERVER_DATA": str(data_dir),
            "YIWANG_STATE_DIR": str(self.state_dir),
        }

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._keep_log()
        _script("docserver.sh", "start", self.env)

    def stop(self) -> None:
        _script("docserver.sh", "stop", self.env)

    def close(self) -> None:
        """After `stop`: its log kept, its files gone."""
        self._keep_log()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def crash(self) -> None:
        """SIGKILL, as a machine's OOM killer would: no chance to close anything cleanly."""
        pid = int((self.state_dir / f"docserver-{self.port}.pid").read_text())
        os.kill(pid, signal.SIGKILL)
        eventually(lambda: not Path(f"/proc/{pid}").exists(), timeout=10, what="the document server gone")

    def _keep_log(self) -> None:
        """Move what the server (no longer running) has logged to the end of `log_path`."""
        log = self.state_dir / f"docserver-{self.port}.log"
        if log.exists():
            with self.log_path.open("ab") as kept:
                kept.write(log.read_bytes())
            log.unlink()


class Toxiproxy:
    """Toxiproxy's server on a free port, with one proxy per upstream; faults are its 'toxics'."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        self.process: subprocess.Popen | None = None
        self.listen: dict[str, int] = {}

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        binary = _script("toxiproxy.sh", "path", {}).splitlines()[-1]
        log = self.log_path.open("ab")
        self.process = subprocess.Popen([binary, "-host", "127.0.0.1", "-port", str(self.port)], stdout=log, stderr=log)
        eventually(self._answers, timeout=15, what="Toxiproxy's API")

    def _answers(self) -> bool:
        try:
            return requests.get(f"{self.api}/version", timeout=1).ok
        except requests.RequestException:
            return False

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)

    def proxy(self, name: str, upstream_port: int) -> int:
        """A proxy to 127.0.0.1:upstream_port; returns the port the services should use instead."""
        self.listen[name] = free_port()
        body = {"name": name, "listen": f"127.0.0.1:{self.listen[name]}", "upstream": f"127.0.0.1:{upstream_port}"}
        requests.post(f"{self.api}/proxies", json=body, timeout=5).raise_for_status()
        return self.listen[name]

    def add_latency(self, name: str, milliseconds: int, jitter: int = 0) -> None:
        for stream in ("upstream", "downstream"):
            toxic = {
                "name": f"latency_{stream}",
                "type": "latency",
                "stream": stream,
                "attributes": {"latency": milliseconds // 2, "jitter": jitter // 2},
            }
            requests.post(f"{self.api}/proxies/{name}/toxics", json=toxic, timeout=5).raise_for_status()

    def black_hole(self, name: str) -> None:
        """What is sent either way vanishes and no reset tells anyone, as when a peer's host is
        gone without a word: requests in flight are lost, and so are replies to writes already
        done. Toxiproxy's timeout toxic drops data while it is on (with a timeout of 0 it would
        only hold it back) and closes the connections when removed, as a client's or the kernel's
        timeout finally would."""
        for stream in ("upstream", "downstream"):
            toxic = {
                "name": f"black_hole_{stream}",
                "type": "timeout",
                "stream": stream,
                "attributes": {"timeout": 3_600_000},
            }
            requests.post(f"{self.api}/proxies/{name}/toxics", json=toxic, timeout=5).raise_for_status()

    def remove_toxics(self, name: str) -> None:
        toxics = requests.get(f"{self.api}/proxies/{name}/toxics", timeout=5).json()
        for toxic in toxics:
            requests.delete(f"{self.api}/proxies/{name}/toxics/{toxic['name']}", timeout=5).raise_for_status()

    def reset_connections(self, name: str, down_for: float = 0.5) -> None:
        """Every open connection through the proxy is cut, and new ones refused for `down_for` s."""
        requests.post(f"{self.api}/proxies/{name}", json={"enabled": False}, timeout=5).raise_for_status()
        time.sleep(down_for)
        requests.post(f"{self.api}/proxies/{name}", json={"enabled": True}, timeout=5).raise_for_status()
