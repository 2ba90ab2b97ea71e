"""The container path minus Docker: build the Bento, export it, import it into an empty store, serve it."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tiffin.serving.server import BentoServer

from ..conftest import Project
from .conftest import HISTORY_KEEP_DAYS

pytestmark = pytest.mark.slow

RECORD = {
    "dteday": "2012-06-01", "hr": 8, "season": "summer", "holiday": "No", "weekday": "Fri", "workingday": "Yes",
    "weathersit": "Clear", "temp": 21.3, "atemp": 25.0, "hum": 60.0, "windspeed": 12.0,
}  # fmt: skip


def test_the_built_bento_serves_the_same_answers_after_export_and_import(
    reproduced_project: Project, api: str, tmp_path: Path
) -> None:
    project = reproduced_project
    project.run("bentoml", "build", "--output", "tag")
    exported = tmp_path / "tiffin.bento"
    project.run("bentoml", "export", "tiffin:latest", str(exported))

    bento = Path(project.env["BENTOML_HOME"]) / "bentos/tiffin"
    built = next(p for p in bento.iterdir() if p.name != "latest")
    assert (built / "env/docker/Dockerfile").exists()
    requirements = (built / "env/python/requirements.txt").read_text()
    assert "bentoml==" in requirements and "scikit-learn==" in requirements and "dvc" not in requirements

    # The packaged server holds as much history as the development one (`api`), so the record is as fresh there.
    fresh = {**project.env, "BENTOML_HOME": str(tmp_path / "fresh-store"),
             "TIFFIN_HISTORY_KEEP_DAYS": str(HISTORY_KEEP_DAYS)}  # fmt: skip
    project.run("bentoml", "import", str(exported), env=fresh)
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    server = BentoServer("tiffin:latest", cwd=neutral, env=fresh, log=tmp_path / "bento.log").wait_ready()
    try:
        packaged = httpx.post(f"{server.url}/predict", json={"rows": [RECORD]}, timeout=30).json()
        interface = httpx.get(f"{server.url}/ui/models", timeout=30)  # its templates travelled with the package
        assert interface.status_code == 200 and "<table" in interface.text
    finally:
        server.stop()
    development = httpx.post(f"{api}/predict", json={"rows": [RECORD]}, timeout=30).json()
    assert packaged == development
    assert packaged["model"] == json.loads((project.path / "models/registration.json").read_text())["tag"]

    # The same Bento is the batch runner: its own copy of the package, its own store (the CronJob's layout).
    imported = next(p for p in (tmp_path / "fresh-store/bentos/tiffin").iterdir() if p.name != "latest")
    source = f"sqlite:///{shutil.copy(project.path / 'data/tiffin.db', tmp_path / 'source.db')}"
    env = {k: v for k, v in fresh.items() if k not in ("TIFFIN_MODEL", "PYTHONPATH")}
    done = subprocess.run(
        [sys.executable, "-m", "tiffin", "batch", "--db", f"sqlite:///{tmp_path / 'scored.db'}", "--end", "2011-01-02"],
        cwd=imported / "src", env={**env, "TIFFIN_DB_URL": source}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1 and "tiffin db seed" in done.stderr  # an empty target database: a clear error
    done = subprocess.run(
        [sys.executable, "-m", "tiffin", "batch", "--db", source, "--end", "2011-01-02"],
        cwd=imported / "src", env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "batch success" in done.stdout and packaged["model"] in done.stdout
