"""Real BentoML servers on free loopback ports, serving the session's registered model."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import ROOT, Project


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    """`bentoml serve` in its own process group; `url` once /readyz says yes."""

    def __init__(self, target: str, cwd: Path, env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = ["bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(log, "wb") as out:
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float = 90) -> Server:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=2).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        self.stop()
        raise TimeoutError(f"not ready after {timeout} s:\n{self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)


def serve(project: Project, tmp: Path, target: str = "service.app:Tiffin", cwd: Path = ROOT, **env: str) -> Server:
    tag = json.loads((project.path / "models/registration.json").read_text())["tag"]
    environment = {**project.env, "TIFFIN_MODEL": tag, **env}
    return Server(target, cwd, environment, tmp / f"server-{free_port()}.log").wait_ready()


@pytest.fixture(scope="session")
def api(reproduced_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The service from this checkout, with small limits so the tests can reach them."""
    server = serve(
        reproduced_project,
        tmp_path_factory.mktemp("api"),
        TIFFIN_MAX_ROWS="3000",
        TIFFIN_MAX_BODY_BYTES="1500000",
    )
    yield server.url
    server.stop()


@pytest.fixture(scope="session")
def guarded_api(reproduced_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One worker, one request at a time, and a bearer token."""
    server = serve(
        reproduced_project,
        tmp_path_factory.mktemp("guarded"),
        TIFFIN_API_TOKEN="s3cret",
        TIFFIN_WORKERS="1",
        TIFFIN_MAX_CONCURRENCY="1",
    )
    yield server.url
    server.stop()
