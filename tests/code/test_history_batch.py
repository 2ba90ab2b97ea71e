"""A history model in the batch runner (issue 15): it materializes the feature table, reads its features from it,
and scores and logs exactly what training computes for the same rows; on SQLite and PostgreSQL."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.features import store
from tiffin.features.history import history_features
from tiffin.jobs.batch import SUCCESS, BatchJob
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage import predlog

from ..conftest import ROOT

TAG = "bike_demand_history:batch-test"


@pytest.fixture(scope="module")
def history_spec():
    return load_spec(ROOT / "specs/bike_sharing_history.yaml")


@pytest.fixture(scope="module")
def offline(history_spec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    """January and February 2011 as training sees them: canonical rows with their history features."""
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")].reset_index(drop=True)
    result = Contract(history_spec).validate(raw)
    known = pd.concat([result.valid, result.unlabeled], ignore_index=True)
    return result.valid.join(history_features(history_spec, known, result.valid))


def test_the_batch_reads_and_logs_the_features_training_computes(db_url, history_spec, offline, bike_raw) -> None:
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 30}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])

    summary = BatchJob(engine, Scorer(pipeline, history_spec), TAG).run("2011-02-01", "2011-02-28")
    assert summary.status == SUCCESS and len(store.read(engine, history_spec, "2011-02-01", "2011-02-28")) > 600

    february = offline[offline["dteday"] >= "2011-02-01"]
    february = february.iloc[history_spec.event_time(february).argsort(kind="stable")].reset_index(drop=True)
    logged = predlog.read(engine, history_spec, "2011-02-01", "2011-02-28")
    logged = logged.assign(at=logged["event_time"]).sort_values("at").reset_index(drop=True)
    assert len(logged) == len(february) == summary.rows_scored
    names = history_spec.history.names()
    expected = february[names].to_numpy(dtype="float64")
    assert np.array_equal(logged[names].to_numpy(dtype="float64"), expected, equal_nan=True)  # exact equality
    assert np.array_equal(logged["prediction"].to_numpy(), pipeline.predict(february))
    engine.dispose()
