"""The monitoring page: served by the real service, its charts rendered by a real (headless) Chromium."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import httpx
import joblib
import numpy as np
import pandas as pd
import pytest
from matplotlib.image import imread
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.features.history import history_features
from tiffin.lifecycle import monitor_report
from tiffin.serving import dashboard
from tiffin.storage import database as db
from tiffin.storage import predlog
from tiffin.storage.modelstore import LoadedModel

from ..conftest import IN_CI, Project
from .conftest import serve

CHROMIUM = os.environ.get("TIFFIN_CHROMIUM", "/usr/bin/chromium")  # Debian's package: `make browser`


@pytest.fixture(scope="module")
def reports(reproduced_project: Project, tmp_path_factory: pytest.TempPathFactory, bike_raw: pd.DataFrame) -> Path:
    """A monitoring run of the session's model over a fortnight after its training period, with actuals."""
    tag = reproduced_project.read_json("models/registration.json")["tag"]
    stored = reproduced_project.path / ".bentoml/models" / tag.replace(":", "/")
    spec = load_spec(stored / "spec.yaml")
    model = LoadedModel(tag, joblib.load(stored / "model.joblib"), spec, {}, stored)
    work = tmp_path_factory.mktemp("monitor")
    engine = db.engine_for(f"sqlite:///{work / 'source.db'}")
    window = bike_raw[(bike_raw["dteday"] >= "2011-05-01") & (bike_raw["dteday"] <= "2011-05-14")]
    db.seed(engine, spec, window)
    rows = Contract(spec).validate(window).valid
    if spec.history:  # the default spec's model: its history features, as the batch runner logs them
        rows = rows.join(history_features(spec, rows))
    predictions = model.pipeline.predict(rows)
    predlog.write(engine, spec, predlog.entries(spec, rows, predictions, model=tag, role="champion", source="batch"))
    monitor_report.run(engine, model, "2011-05-01", "2011-05-14", work / "reports")
    engine.dispose()
    return work / "reports"


@pytest.fixture(scope="module")
def server_url(reproduced_project: Project, reports: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = serve(reproduced_project, tmp_path_factory.mktemp("dashboard"), TIFFIN_REPORTS_DIR=str(reports))
    yield server.url
    server.stop()


def get(url: str) -> tuple[int, dict, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def chromium(*args: str, profile: Path) -> subprocess.CompletedProcess[str]:
    browser = shutil.which(CHROMIUM)  # a path, or a name on PATH (google-chrome on GitHub's runners)
    if browser is None:
        message = f"{CHROMIUM} is not installed: `make browser`"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    command = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               f"--user-data-dir={profile}", "--virtual-time-budget=10000", *args]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=True)


@pytest.mark.slow
def test_the_service_serves_the_latest_dashboard(server_url: str, reports: Path) -> None:
    status, headers, body = get(f"{server_url}/dashboard/")
    assert status == 200 and headers["content-type"].startswith("text/html")
    assert headers["cache-control"] == "no-store"
    assert body == (reports / "latest/index.html").read_bytes()
    status, _, body = get(f"{server_url}/dashboard")  # without the slash: redirected to the page
    assert status == 200 and body == (reports / "latest/index.html").read_bytes()
    status, _, body = get(f"{server_url}/dashboard/metrics.json")
    assert status == 200 and json.loads(body)["window"] == {"start": "2011-05-01", "end": "2011-05-14"}


@pytest.mark.slow
def test_the_charts_render_in_headless_chromium(server_url: str, tmp_path: Path) -> None:
    dom = chromium("--dump-dom", f"{server_url}/dashboard/", profile=tmp_path / "profile").stdout
    body = re.search(r"<body[^>]*>", dom).group(0)
    rendered = int(re.search(r'data-charts-rendered="(\d+)"', body).group(1))
    total = int(re.search(r'data-charts-total="(\d+)"', body).group(1))
    assert total >= 3 and rendered == total, body
    assert f"{total} of {total} charts rendered" in dom

    shot = tmp_path / "dashboard.png"
    chromium("--window-size=1200,2400", f"--screenshot={shot}", f"{server_url}/dashboard/", profile=tmp_path / "p2")
    pixels = imread(shot)[..., :3].reshape(-1, 3)
    colours = np.unique((pixels * 255).astype(np.uint8), axis=0)
    assert len(colours) > 50  # text, bars and lines: not a blank or an error page


@pytest.mark.slow
def test_metrics_carry_the_latest_monitoring_gauges_beside_bentomls(server_url: str, reports: Path) -> None:
    get(f"{server_url}/dashboard/")  # at least one request counted by BentoML
    status, _, body = get(f"{server_url}/metrics")
    assert status == 200
    families = {family.name: family for family in text_string_to_metric_families(body.decode())}
    assert "bentoml_service_request" in families
    written = json.loads((reports / "latest/metrics.json").read_text())
    served = {s.labels["feature"]: s.value for s in families["tiffin_monitor_feature_psi"].samples}
    assert served == {row["feature"]: row["psi"] for row in written["drift"]["features"]}
    assert families["tiffin_monitor_drifted_features"].samples[0].value == len(written["drift"]["drifted"])


# -- the ASGI parts on their own (no server) ------------------------------------------------------


def asgi_get(app: object, path: str, **headers: str) -> httpx.Response:
    async def call() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(call())


def test_without_a_monitoring_run_the_page_says_how_to_make_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TIFFIN_REPORTS_DIR", str(tmp_path / "none-yet"))
    answer = asgi_get(dashboard.app, "/")
    assert answer.status_code == 404 and "tiffin monitor" in answer.json()["error"]
    answer = asgi_get(dashboard.app, "/", accept="text/html")
    assert answer.status_code == 404 and "tiffin monitor" in answer.text and answer.text.startswith("<!doctype html>")
    assert asgi_get(dashboard.app, "/metrics.json").status_code == 404


def test_the_middleware_appends_the_latest_gauges_to_metrics_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = "# TYPE up gauge\nup 1.0\n"
    app = Starlette(routes=[Route(path, lambda _: PlainTextResponse(own)) for path in ("/metrics", "/other")])
    wrapped = dashboard.MonitorMetrics(app)
    monkeypatch.setenv("TIFFIN_REPORTS_DIR", str(tmp_path))
    assert asgi_get(wrapped, "/metrics").text == own  # no run yet: BentoML's metrics unchanged

    (tmp_path / "latest").mkdir()
    (tmp_path / "latest/metrics.prom").write_text("# TYPE tiffin_monitor_prediction_psi gauge\n"
                                                  "tiffin_monitor_prediction_psi 0.31\n")  # fmt: skip
    answer = asgi_get(wrapped, "/metrics")
    assert answer.headers["content-length"] == str(len(answer.content))
    values = {s.name: s.value for f in text_string_to_metric_families(answer.text) for s in f.samples}
    assert values == {"up": 1.0, "tiffin_monitor_prediction_psi": 0.31}
    assert asgi_get(wrapped, "/other").text == own
    shutil.rmtree(tmp_path / "latest")
    assert asgi_get(wrapped, "/metrics").text == own
