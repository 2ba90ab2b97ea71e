"""The committed dvc.lock matches the code and params: a fresh `make run` reproduces it unchanged."""

import json
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT


def test_no_stage_dependency_or_param_differs_from_the_committed_lock() -> None:
    """Outputs may be missing (a fresh clone has none); code and params must be what dvc.lock recorded."""
    done = subprocess.run(
        [Path(sys.executable).parent / "dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    stale = {
        stage: change
        for stage, changes in json.loads(done.stdout or "{}").items()
        for change in changes
        if isinstance(change, dict) and ({"changed deps", "changed params"} & set(change))
        and not all(v == "deleted" for kind in change.values() for v in kind.values())
    }  # fmt: skip
    assert not stale, f"run `dvc repro` and commit dvc.lock: {stale}"
