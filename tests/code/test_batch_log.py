"""The batch's prediction log by reference (issue 18): the batch writes no inputs into the log, monitoring reads
them from the source table by key, and its figures are those of the log that copied the inputs; on SQLite and
PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import logged as prediction_log
from tiffin.jobs.batch import PARTIAL, SUCCESS, BatchJob
from tiffin.lifecycle import monitor_report, monitoring
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage import predlog
from tiffin.storage.modelstore import LoadedModel

from ..conftest import monitored_model

START, END = "2011-02-01", "2011-04-30"
CHAMPION, CHALLENGER = "bike_demand:champion", "bike_demand:challenger"


@pytest.fixture(scope="module")
def fitted(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> tuple:
    valid = Contract(bike_spec).validate(bike_raw[bike_raw["dteday"] <= "2011-01-31"]).valid
    champion = build_pipeline(bike_spec, {"max_iter": 30}).fit(valid, valid[bike_spec.target])
    challenger = build_pipeline(bike_spec, {"max_iter": 3}).fit(valid, valid[bike_spec.target])
    return valid, champion, challenger


@pytest.fixture
def model(bike_spec: DatasetSpec, fitted: tuple, tmp_path: Path) -> LoadedModel:
    train, champion, _ = fitted
    return monitored_model(CHAMPION, bike_spec, champion, train, tmp_path)


def figures(engine: sa.Engine, model: LoadedModel) -> dict:
    """What `tiffin monitor` reports (metrics.json), without the time it was made."""
    document = monitor_report.metrics_document(monitoring.monitor(engine, model, START, END))
    return {name: value for name, value in document.items() if name != "generated_at"}


def copied_log(engine: sa.Engine, spec: DatasetSpec) -> pd.DataFrame:
    """The log as the batch wrote it before issue 18: every logged prediction with its canonical inputs copied,
    a chunk's champion rows then its challenger rows."""
    contract = Contract(spec)
    with engine.connect() as connection:
        scored = pd.read_sql(sa.text("SELECT * FROM predictions WHERE role IS NOT NULL"), connection)
        source = pd.read_sql(sa.text("SELECT * FROM rentals"), connection)
    valid = contract.validate(source, serving=True).valid
    valid = valid.assign(row_key=predlog.row_keys(spec, valid))
    keys, _ = contract.normalise(scored[spec.key], spec.key)
    scored = scored.assign(row_key=predlog.row_keys(spec, keys))[
        ["row_key", "model", "role", "prediction", "scored_at"]
    ]
    parts = []
    for (at, role), rows in sorted(
        scored.groupby(["scored_at", "role"]), key=lambda g: (str(g[0][0]), g[0][1] != "champion")
    ):
        rows = rows.merge(valid, on="row_key").sort_values(spec.key)
        stamp = at if isinstance(at, str) else pd.Timestamp(at).isoformat(timespec="microseconds")
        parts.append(
            predlog.entries(
                spec,
                rows.drop(columns="row_key").reset_index(drop=True),
                rows["prediction"],
                model=rows["model"].iloc[0],
                role=role,
                source=predlog.BATCH,
                logged_at=stamp,
            )
        )
    return pd.concat(parts, ignore_index=True)


def test_monitoring_gives_the_same_figures_from_the_log_by_reference_as_from_copied_inputs(
    db_url: str, bike_spec: DatasetSpec, bike_raw: pd.DataFrame, fitted: tuple, model: LoadedModel
) -> None:
    _, champion, challenger = fitted
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, bike_raw[bike_raw["dteday"] <= "2011-04-30"])
    # The API's rows (inputs logged whole) for a week of the window, before the batch scores it all.
    api_week = Contract(bike_spec).validate(bike_raw[bike_raw["dteday"].between("2011-03-01", "2011-03-07")]).valid
    predlog.write(engine, bike_spec, predlog.entries(bike_spec, api_week, champion.predict(api_week), model=CHAMPION,
                                                     role=predlog.CHAMPION, source=predlog.API))  # fmt: skip
    job = BatchJob(engine, Scorer(champion, bike_spec), CHAMPION, chunk_rows=700,
                   shadow=(CHALLENGER, Scorer(challenger, bike_spec)))  # fmt: skip
    summary = job.run(START, END)
    assert summary.status in (SUCCESS, PARTIAL) and summary.rows_scored > 2000 and summary.chunks >= 3

    with engine.connect() as connection:
        by_source = dict(
            connection.execute(sa.text("SELECT source, COUNT(*) FROM prediction_log GROUP BY source")).all()
        )
    assert by_source == {predlog.API: len(api_week)}  # no batch row, no input of the batch copied into the log
    by_reference = figures(engine, model)
    # The API's week is also in the batch's window: an hour scored twice is one row of the feed, counted once.
    assert by_reference["rows"]["logged"] == summary.rows_scored
    assert {row["role"] for row in by_reference["performance"]["by_model"]} == {"champion", "challenger"}
    assert by_reference["performance"]["head_to_head"]["rows"] == summary.rows_scored

    # The same data logged the way the batch did before: inputs copied, no role on the batch's own rows.
    copied = copied_log(engine, bike_spec)
    assert len(copied) == 2 * summary.rows_scored
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE predictions SET role = NULL"))
    predlog.write(engine, bike_spec, copied)
    assert figures(engine, model) == by_reference
    engine.dispose()


def test_a_run_without_the_log_logs_nothing_and_the_log_follows_the_window(
    db_url: str, bike_spec: DatasetSpec, bike_raw: pd.DataFrame, fitted: tuple
) -> None:
    _, champion, _ = fitted
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, bike_raw[bike_raw["dteday"].between("2011-02-01", "2011-02-28")])
    scorer = Scorer(champion, bike_spec)
    BatchJob(engine, scorer, "bike_demand:unlogged", log_predictions=False).run("2011-02-01", "2011-02-14")
    assert prediction_log.read(engine, bike_spec, "2011-02-01", "2011-02-28").empty
    summary = BatchJob(engine, scorer, CHAMPION).run("2011-02-01", "2011-02-28")
    logged = prediction_log.read(engine, bike_spec, "2011-02-10", "2011-02-11T05:00:00")
    expected = Contract(bike_spec).validate(bike_raw[bike_raw["dteday"].between("2011-02-10", "2011-02-11")]).valid
    expected = expected[bike_spec.event_time(expected) <= pd.Timestamp("2011-02-11T05:00:00")]
    assert summary.rows_scored > 600 and len(logged) == len(expected)
    assert logged["event_time"].min() == pd.Timestamp("2011-02-10") and logged["event_time"].max() == pd.Timestamp(
        "2011-02-11T05:00:00"
    )
    wanted = dict(zip(predlog.row_keys(bike_spec, expected), champion.predict(expected), strict=True))
    assert dict(zip(logged["row_key"], logged["prediction"], strict=True)) == wanted  # exact: the same doubles
    engine.dispose()
