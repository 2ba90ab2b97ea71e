"""History features end to end (issue 15): over a month of the example, arriving as production sees it (the first
two days an hour at a time, then a day at a time, the batch runner after each arrival), the feature vectors
training computes, the batch runner reads from the feature table and the API looks up online are identical, bit
for bit."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.features import logged as prediction_log
from tiffin.features.history import history_features
from tiffin.jobs.batch import BatchJob
from tiffin.serving.openapi import request_json
from tiffin.serving.scorer import Scorer
from tiffin.serving.server import BentoServer
from tiffin.storage import database
from tiffin.storage.modelstore import ModelStore

from ..conftest import QUICK_TRAIN, SHARES, Project, make_project

pytestmark = pytest.mark.slow
SPEC = "specs/bike_sharing.yaml"


def logged(project: Project, source: str) -> pd.DataFrame:
    engine = sa.create_engine(project.env["TIFFIN_DB_URL"])
    spec = load_spec(project.path / SPEC)
    rows = prediction_log.read(engine, spec, "2011-04-01", "2011-04-30", source=source)
    engine.dispose()
    return rows.sort_values("event_time").drop_duplicates("row_key").reset_index(drop=True)


def replay(project: Project, tag: str, bike_raw: pd.DataFrame) -> None:
    """April arrives: each arrival seeded, then scored by the batch runner (which materializes first)."""
    spec = load_spec(project.path / SPEC)
    engine = database.engine_for(project.env["TIFFIN_DB_URL"])
    scorer = Scorer.from_model(ModelStore(project.env["BENTOML_HOME"]).load(tag))
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-04-30")].reset_index(drop=True)
    hours = [pd.Timestamp("2011-04-01") + pd.Timedelta(hours=h) for h in range(48)]
    days = [pd.Timestamp("2011-04-03") + pd.Timedelta(days=d) for d in range(28)]
    arrivals = [(h, h) for h in hours] + [(d, d + pd.Timedelta(hours=23)) for d in days]
    for first, last in arrivals:
        database.seed(engine, spec, raw, held_back=Contract(spec).held_back(raw, last.to_pydatetime()))
        BatchJob(engine, scorer, tag).run(first.strftime("%Y-%m-%d"), first.strftime("%Y-%m-%d"))
    engine.dispose()


def test_training_the_batch_and_the_api_use_the_same_history_features(tmp_path: Path, bike_raw) -> None:
    project = make_project(tmp_path / "project")
    project.set_params(spec=SPEC, ingest={"start": "2011-01-01", "end": "2011-03-31"}, split=SHARES, train=QUICK_TRAIN)
    project.run("tiffin", "db", "seed", "--until", "2011-03-31T23:00")
    project.run("dvc", "repro")
    tag = project.read_json("models/registration.json")["tag"]
    replay(project, tag, bike_raw)
    batch = logged(project, "batch")

    # Training's computation, on the same rows.
    spec = load_spec(project.path / SPEC)
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-04-30")]
    result = Contract(spec).validate(raw)
    known = pd.concat([result.valid, result.unlabeled], ignore_index=True)
    april = result.valid[result.valid["dteday"] >= "2011-04-01"]
    april = april.iloc[spec.event_time(april).argsort(kind="stable")].reset_index(drop=True)
    offline = history_features(spec, known, april)
    names = spec.history.names()
    assert len(batch) == len(april)
    assert np.array_equal(batch[names].to_numpy("float64"), offline.to_numpy("float64"), equal_nan=True)

    # The API, asked for the same hours with the same records a client sends (no history in them).
    env = {**project.env, "TIFFIN_MODEL": tag, "TIFFIN_CHALLENGER": "none", "TIFFIN_LOG_SAMPLE": "1",
           "TIFFIN_WORKERS": "1"}  # fmt: skip
    records = json.loads(request_json(april[spec.input_columns], spec))
    with BentoServer("service.app:Tiffin", cwd=project.path, env=env, log=tmp_path / "server.log").wait_ready() as api:
        answers = [
            httpx.post(f"{api.url}/predict", json={"rows": records[i : i + 50]}) for i in range(0, len(records), 50)
        ]
        assert all(answer.status_code == 200 for answer in answers), answers[0].text
        assert sum(answer.json()["stale_features"] for answer in answers) == 0
        far = httpx.post(
            f"{api.url}/predict", json={"rows": [{**records[0], "dteday": "2011-06-01", "weekday": None}]}
        ).json()
        assert far["stale_features"] == 1  # nothing known in the 48 hours before: null history, counted
        metrics = httpx.get(f"{api.url}/metrics").text
        assert (
            "tiffin_stale_history_rows_total 1.0" in metrics and "tiffin_history_refreshed_timestamp_seconds" in metrics
        )
    served = [p for answer in answers for p in answer.json()["predictions"]]
    online = logged(project, "api")
    online = online[online["row_key"].isin(batch["row_key"])].reset_index(drop=True)
    assert len(online) == len(batch)
    assert np.array_equal(online[names].to_numpy("float64"), batch[names].to_numpy("float64"), equal_nan=True)
    np.testing.assert_allclose(served, batch["prediction"], rtol=0, atol=1e-9)
