"""Real BentoML servers on free loopback ports, serving the session's registered model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tiffin.serving.server import BentoServer

from ..conftest import ROOT, Project


def serve(project: Project, tmp: Path, target: str = "service.app:Tiffin", cwd: Path = ROOT, **env: str) -> BentoServer:
    """The service from this checkout (a real `bentoml serve`), with the session's model."""
    tag = json.loads((project.path / "models/registration.json").read_text())["tag"]
    environment = {**project.env, "TIFFIN_MODEL": tag, **env}
    return BentoServer(target, cwd=cwd, env=environment, log=tmp / "server.log").wait_ready()


@pytest.fixture(scope="session")
def api_server(reproduced_project: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[BentoServer]:
    """The service from this checkout, with small limits so the tests can reach them."""
    server = serve(
        reproduced_project,
        tmp_path_factory.mktemp("api"),
        TIFFIN_MAX_ROWS="3000",
        TIFFIN_MAX_BODY_BYTES="1500000",
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def api(api_server: BentoServer) -> str:
    return api_server.url


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
