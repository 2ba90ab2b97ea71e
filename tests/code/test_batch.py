"""Batch scoring on SQLite and PostgreSQL: exactly once per (key, model), nothing lost."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.jobs.batch import PARTIAL, SUCCESS, BatchJob
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db

TAG = "bike_demand:batch-test"
DAYS = ["2012-03-01", "2012-03-02", "2012-03-03"]


@pytest.fixture
def days(bike_raw: pd.DataFrame) -> pd.DataFrame:
    return bike_raw[bike_raw["dteday"].isin(DAYS)].reset_index(drop=True)


def job(url: str, scorer: Scorer, **kwargs) -> BatchJob:
    return BatchJob(db.engine_for(url), scorer, TAG, **kwargs)


def table(url: str, name: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        frame = pd.read_sql_table(name, connection)
    engine.dispose()
    return frame


def test_a_first_run_scores_every_row_as_the_pipeline_does(db_url, bike_spec, scorer, days) -> None:
    db.seed(db.engine_for(db_url), bike_spec, days)
    summary = job(db_url, scorer, chunk_rows=20).run()
    assert (summary.status, summary.rows_read, summary.rows_scored, summary.exit_code) == (
        SUCCESS,
        len(days),
        len(days),
        0,
    )

    predictions = table(db_url, "predictions").sort_values(["dteday", "hr"])
    assert len(predictions) == len(days) and set(predictions["model"]) == {TAG}
    expected = days.assign(prediction=scorer.pipeline.predict(Contract(bike_spec).validate(days).valid))
    merged = predictions.merge(
        expected[["dteday", "hr", "prediction"]], on=["dteday", "hr"], suffixes=("", "_pipeline")
    )
    np.testing.assert_allclose(merged["prediction"], merged["prediction_pipeline"], rtol=0, atol=1e-9)
    runs = table(db_url, "batch_runs")
    assert runs[["status", "rows_read", "rows_scored", "rows_rejected"]].values.tolist() == [
        [SUCCESS, len(days), len(days), 0]
    ]


def test_a_rerun_writes_nothing_and_changes_no_earlier_result(db_url, bike_spec, scorer, days) -> None:
    db.seed(db.engine_for(db_url), bike_spec, days)
    job(db_url, scorer).run()
    before = table(db_url, "predictions").sort_values(["dteday", "hr"]).reset_index(drop=True)
    again = job(db_url, scorer).run()
    assert (again.rows_read, again.rows_scored) == (0, 0)
    pd.testing.assert_frame_equal(
        table(db_url, "predictions").sort_values(["dteday", "hr"]).reset_index(drop=True), before
    )


def test_overlapping_windows_add_only_what_is_new(db_url, bike_spec, scorer, days) -> None:
    db.seed(db.engine_for(db_url), bike_spec, days)
    first = job(db_url, scorer).run(start=DAYS[0], end=DAYS[1])
    second = job(db_url, scorer).run(start=DAYS[1], end=DAYS[2])
    predictions = table(db_url, "predictions")
    assert len(predictions) == len(days) and not predictions.duplicated(["dteday", "hr", "model"]).any()
    assert second.rows_read == (days["dteday"] == DAYS[2]).sum()
    assert set(predictions.loc[predictions["dteday"] == DAYS[1], "run_id"]) == {first.run_id}


def test_bad_rows_are_rejected_with_reasons_and_good_rows_are_scored(db_url, bike_spec, scorer, days) -> None:
    bad = days.astype({"temp": object})
    bad.loc[0, "hr"] = "77pm"
    bad.loc[1, "temp"] = "warm"
    bad.loc[2, "weathersit"] = "Sunny"
    db.seed(db.engine_for(db_url), bike_spec, bad)
    summary = job(db_url, scorer, chunk_rows=25).run()
    assert (summary.status, summary.rows_rejected, summary.rows_scored, summary.exit_code) == (
        PARTIAL, 3, len(days) - 3, 3
    )  # fmt: skip
    rejects = table(db_url, "prediction_rejects").sort_values("field")
    assert rejects[["field", "value", "rule"]].values.tolist() == [
        ["hr", "77pm", "type: integer (hour_of_day)"],
        ["temp", "warm", "type: number"],
        ["weathersit", "Sunny", "isin(['Clear', 'Mist', 'Light Rain', 'Heavy Rain'])"],
    ]
    assert set(rejects["dteday"]) <= set(DAYS) and set(rejects["model"]) == {TAG}
    again = job(db_url, scorer).run()  # a re-run does not take the same rejects up again: a quiet run
    assert (again.rows_rejected, again.rows_skipped, again.exit_code) == (0, 3, 0)
    assert len(table(db_url, "prediction_rejects")) == 3


def test_since_last_continues_from_the_watermark(db_url, bike_spec, scorer, days) -> None:
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, days[days["dteday"] != DAYS[2]])
    first = job(db_url, scorer).run(since_last=True)
    db.seed(engine, bike_spec, days)  # a new day arrives
    second = job(db_url, scorer).run(since_last=True)
    assert (first.window_end, second.window_start, second.window_end) == (DAYS[1], DAYS[1], DAYS[2])
    assert second.rows_read == (days["dteday"] == DAYS[2]).sum()
    assert table(db_url, "batch_watermarks")["window_end"].tolist() == [DAYS[2]]
