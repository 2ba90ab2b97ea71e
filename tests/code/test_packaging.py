"""The Bento installs exactly the locked versions: service/requirements.txt is uv.lock's export."""

import os
import shlex
import shutil
import subprocess
import sys

from ..conftest import ROOT


def uv_command() -> list[str]:
    """`make` exports UV (uv on PATH, or `python3 -m uv` where make installed it with pip)."""
    if os.environ.get("UV"):
        return shlex.split(os.environ["UV"])
    return [shutil.which("uv")] if shutil.which("uv") else [sys.executable, "-m", "uv"]


def test_the_bento_requirements_are_the_lock_file_exported() -> None:
    exported = subprocess.run(
        [*uv_command(), "export", "--frozen", "--no-dev", "--no-emit-project", "--no-hashes", "--no-header", "--quiet"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    committed = (ROOT / "service/requirements.txt").read_text()
    assert exported == committed, "service/requirements.txt is stale: run `make bento` (it re-exports uv.lock)"
    pins = [line for line in committed.splitlines() if line and not line.startswith(("#", " "))]
    assert all("==" in pin for pin in pins) and not any(pin.startswith("dvc==") for pin in pins)
