"""The Bento as a container, built and run on this machine: labelled, non-root, cached, gated, and the batch runner.

A Docker engine is started if none answers (deploy/container/engine.sh). Where none can start, the tests skip
saying why, except under CI=true, where they fail: they are what proves the image.
"""

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ..conftest import IN_CI, ROOT, Project
from .test_release_gate import slo

pytestmark = pytest.mark.slow

BASE_IMAGE = "python:3.11-slim" if os.environ.get("GITHUB_ACTIONS") else "tiffin-base:bookworm"
WHEELS = ROOT / ".cache/wheelhouse"  # shared by runs: one folder a requirements file


def docker(*arguments: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["docker", *arguments], capture_output=True, text=True, timeout=timeout)


def start_engine() -> None:
    done = subprocess.run(["bash", str(ROOT / "deploy/container/engine.sh")], capture_output=True, text=True)
    if done.returncode != 0:
        reason = f"no Docker engine could start here:\n{done.stdout}{done.stderr}"
        if IN_CI:
            pytest.fail(reason)
        pytest.skip(reason)
    if BASE_IMAGE.startswith("tiffin-base"):
        made = subprocess.run(["bash", str(ROOT / "deploy/container/base-image.sh"), BASE_IMAGE],
                              capture_output=True, text=True)  # fmt: skip
        assert made.returncode == 0, made.stdout + made.stderr


def pinned(requirement: Requirement) -> tuple[str, str]:
    return canonicalize_name(requirement.name), str(requirement.specifier).removeprefix("==")


def build(project: Project, image: str, out: Path) -> subprocess.CompletedProcess[str]:
    return project.run("tiffin", "container", "build", "--image", image, "--base-image", BASE_IMAGE,
                       "--wheels", str(WHEELS), "--out", str(out))  # fmt: skip


@pytest.fixture(scope="module")
def image(reproduced_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    start_engine()
    reproduced_project.run("bentoml", "build")
    name = f"tiffin-test:{uuid.uuid4().hex[:8]}"
    build(reproduced_project, name, tmp_path_factory.mktemp("image") / "image.json")
    yield name
    docker("image", "rm", "--force", name)


def test_the_image_says_what_it_serves_runs_as_its_user_and_rebuilds_from_its_layers(
    reproduced_project: Project, image: str, tmp_path: Path
) -> None:
    project = reproduced_project
    labels = json.loads(docker("image", "inspect", "--format", "{{json .Config.Labels}}", image).stdout)
    registered = project.read_json("models/registration.json")["tag"]
    commit = project.run("git", "rev-parse", "HEAD").stdout.strip()
    lock = yaml.safe_load((project.path / "dvc.lock").read_text())["stages"]
    snapshot = next(out["md5"] for out in lock["ingest"]["outs"] if out["path"] == "data/snapshot/rows.parquet")
    assert labels["org.tiffin.model"] == registered
    assert labels["org.tiffin.git-commit"] == commit and labels["org.tiffin.data-snapshot"] == snapshot

    whoami = docker("run", "--rm", "--network", "none", image, "id", "-u")
    assert whoami.returncode == 0 and whoami.stdout.strip() not in ("", "0"), whoami.stderr
    # Exactly the locked requirements: what pip has installed in the image is the Bento's requirements file.
    frozen = docker("run", "--rm", "--network", "none", image, "pip", "freeze", "--all").stdout
    installed = {pinned(Requirement(line)) for line in frozen.splitlines() if "==" in line}
    bento = Path(project.env["BENTOML_HOME"]) / "bentos/tiffin"
    built = max((p for p in bento.iterdir() if p.name != "latest"), key=lambda p: p.stat().st_mtime)
    lines = (built / "env/python/requirements.txt").read_text().splitlines()
    locked = [Requirement(line) for line in lines if "==" in line and not line.startswith("#")]
    wanted = {pinned(r) for r in locked if r.marker is None or r.marker.evaluate()}  # Linux, CPython 3.11 too
    assert wanted <= installed and {name for name, _ in installed - wanted} <= {"pip", "setuptools"}

    before = docker("image", "inspect", "--format", "{{.Id}}", image).stdout
    again = build(project, image, tmp_path / "again.json")
    assert docker("image", "inspect", "--format", "{{.Id}}", image).stdout == before  # every layer reused
    assert "Running in" not in again.stdout  # not a single step re-run


def test_the_image_passes_the_release_gate(reproduced_project: Project, image: str, tmp_path: Path) -> None:
    """Lenient timing (the machine, not the image, sets it: figures in the README), strict answers."""
    out = tmp_path / "gate"
    done = reproduced_project.run("tiffin", "container", "gate", "--image", image, "--slo", str(slo(tmp_path)),
                                  "--run-seconds", "5", "--out", str(out), check=False)  # fmt: skip
    assert done.returncode == 0, f"{done.stdout}\n{done.stderr}\n{(out / 'container.log').read_text()[-3000:]}"
    assert json.loads((out / "ready.json").read_text())["start_to_ready_s"] > 0
    verdict = json.loads((out / "gate.json").read_text())
    assert verdict["passed"] and all(c["passed"] for c in verdict["checks"] if c["metric"] == "max_failure_ratio")
    assert not docker("ps", "--all", "--quiet", "--filter", f"ancestor={image}").stdout.strip()  # removed


@pytest.mark.postgres
def test_the_image_runs_the_batch_with_the_predictions_of_a_local_run(
    reproduced_project: Project, image: str, postgres_db: str, tmp_path: Path
) -> None:
    """The same rows, scored by `tiffin batch` in the image (PostgreSQL on the host) and in the checkout (SQLite)."""
    project = reproduced_project
    local = f"sqlite:///{tmp_path / 'local.db'}"
    for url in (postgres_db, local):
        project.run("tiffin", "db", "seed", "--db", url)
    window = ["--start", "2011-03-01", "--end", "2011-03-07"]
    inside = docker("run", "--rm", "--network", "host", image, "tiffin", "batch", "--db", postgres_db, *window)
    assert inside.returncode == 0, inside.stdout + inside.stderr
    assert "batch success" in inside.stdout
    project.run("tiffin", "batch", "--db", local, *window)

    def predictions(url: str) -> pd.DataFrame:
        engine = sa.create_engine(url)
        with engine.connect() as connection:
            frame = pd.read_sql(sa.text("SELECT * FROM predictions"), connection)
        engine.dispose()
        return frame.sort_values(["dteday", "hr"]).reset_index(drop=True)

    container, checkout = predictions(postgres_db), predictions(local)
    assert len(container) == len(checkout) > 6 * 24  # a week of hours (the data misses a few)
    assert (container["model"] == checkout["model"]).all()
    np.testing.assert_array_equal(container["prediction"].to_numpy(), checkout["prediction"].to_numpy())
