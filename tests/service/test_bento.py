"""The container path minus Docker: build the Bento, export it, import it into an empty store, serve it."""

import json
from pathlib import Path

import httpx
import pytest

from ..conftest import Project
from .conftest import Server

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

    fresh = {**project.env, "BENTOML_HOME": str(tmp_path / "fresh-store")}
    project.run("bentoml", "import", str(exported), env=fresh)
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    server = Server("tiffin:latest", neutral, fresh, tmp_path / "bento.log").wait_ready()
    try:
        packaged = httpx.post(f"{server.url}/predict", json={"rows": [RECORD]}, timeout=30).json()
    finally:
        server.stop()
    development = httpx.post(f"{api}/predict", json={"rows": [RECORD]}, timeout=30).json()
    assert packaged == development
    assert packaged["model"] == json.loads((project.path / "models/registration.json").read_text())["tag"]
