"""Starting a BentoML server as a child process and waiting until it is ready.

Used by the benchmark, the load-test gate and the tests: the real server, on a real port.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from types import TracebackType


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _tiffin() -> str:
    """The `tiffin` next to this interpreter (the project's environment), else the one on PATH."""
    beside = Path(sys.executable).parent / "tiffin"
    return str(beside) if beside.exists() else "tiffin"


def instance_metrics_dir(home: Path) -> Path:
    """A Prometheus multiprocess folder of this process's own, under `<home>/metrics-instances/<pid>`.

    `bentoml serve` empties `<home>/prometheus_multiproc_dir` as it starts: a second server on the same home
    would erase the first one's metrics. Folders of processes that are gone are removed here.
    """
    root = home / "metrics-instances"
    root.mkdir(parents=True, exist_ok=True)
    for folder in root.iterdir():
        if folder.name.isdigit() and not _alive(int(folder.name)):
            shutil.rmtree(folder, ignore_errors=True)
    mine = root / str(os.getpid())
    shutil.rmtree(mine, ignore_errors=True)  # a reused pid's leftovers
    mine.mkdir()
    return mine


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def serve(arguments: list[str]) -> None:
    """`bentoml serve ARGUMENTS`, in this process, with metrics of its own (`instance_metrics_dir`)."""
    from bentoml._internal.configuration.containers import BentoMLContainer
    from bentoml_cli.cli import cli

    folder = instance_metrics_dir(Path(BentoMLContainer.bentoml_home.get()))
    BentoMLContainer.prometheus_multiproc_dir.set(str(folder))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    cli.main(["serve", *arguments], prog_name="tiffin serve")


class ServerFailed(RuntimeError):
    """The server exited, or was not ready in time; the message ends with its log."""


class BentoServer:
    """`tiffin serve TARGET` (BentoML's, with metrics of its own) on 127.0.0.1, in its own process group."""

    def __init__(self, target: str, *, cwd: Path | str = ".", env: dict[str, str] | None = None,
                 log: Path | str | None = None, port: int | None = None) -> None:  # fmt: skip
        self.target = target
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(log or f"bentoml-{self.port}.log")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        command = [_tiffin(), "serve", target, "--host", "127.0.0.1", "--port", str(self.port)]
        with open(self.log, "wb") as out:
            self.started = time.monotonic()
            self.process = subprocess.Popen(
                command, cwd=cwd, env=env or dict(os.environ), stdout=out, stderr=subprocess.STDOUT,
                start_new_session=True,
            )  # fmt: skip
        self.ready_after: float | None = None

    def wait_ready(self, timeout: float = 90, interval: float = 0.2) -> BentoServer:
        """Poll /readyz until 200; raise ServerFailed if the process dies or time runs out."""
        deadline = self.started + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise ServerFailed(f"{self.target} exited with {self.process.returncode}:\n{self.tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/readyz", timeout=2) as response:
                    if response.status == 200:
                        self.ready_after = time.monotonic() - self.started
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(interval)
        self.stop()
        raise ServerFailed(f"{self.target} was not ready after {timeout:.0f} s:\n{self.tail()}")

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each worker process (the children that serve), in MiB."""
        sizes = []
        for pid in _descendants(self.process.pid):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
                cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if b"worker-id" in cmdline or b"--worker-id" in cmdline:
                kib = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
                sizes.append(kib / 1024)
        return sizes

    def tail(self, characters: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-characters:] if self.log.exists() else ""

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> BentoServer:
        return self

    def __exit__(self, *_: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.stop()


def _descendants(pid: int) -> list[int]:
    children = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int(Path(f"/proc/{entry.name}/stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            if parent == pid:
                children.append(int(entry.name))
    return children + [grandchild for child in children for grandchild in _descendants(child)]
