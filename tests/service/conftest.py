"""Real BentoML servers on free loopback ports, serving the session's registered model."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.spec import load_spec
from tiffin.features.online import OnlineHistory
from tiffin.serving.server import BentoServer

from ..conftest import ROOT, Project

# The API server's workers hold the whole history (the default is the last 35 days of the source), so the test
# period's records get the history features training computed for them.
HISTORY_KEEP_DAYS = 1000


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
        TIFFIN_HISTORY_KEEP_DAYS=str(HISTORY_KEEP_DAYS),
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


@pytest.fixture(scope="session")
def served_history(reproduced_project: Project) -> Iterator[OnlineHistory | None]:
    """The api server's history lookup, built the same way in this process (None for a row-only model)."""
    tag = json.loads((reproduced_project.path / "models/registration.json").read_text())["tag"]
    spec = load_spec(reproduced_project.path / ".bentoml/models" / tag.replace(":", "/") / "spec.yaml")
    if spec.history is None:
        yield None
        return
    engine = sa.create_engine(reproduced_project.env["TIFFIN_DB_URL"])
    history = OnlineHistory(engine, spec, keep=pd.Timedelta(days=HISTORY_KEEP_DAYS))
    history.refresh(force=True)
    yield history
    engine.dispose()


def as_served(history: OnlineHistory | None, rows: pd.DataFrame) -> pd.DataFrame:
    """Canonical rows with the history features the service looks up for them (stale: null), if it has any."""
    if history is None:
        return rows
    found = history.lookup(rows)
    return rows.assign(**{name: np.where(found.stale, np.nan, values) for name, values in found.features.items()})
