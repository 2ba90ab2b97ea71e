"""The Spark engine (local[2]) scores exactly as the local engine: same predictions, same rejects."""

from __future__ import annotations

import shutil
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.jobs.batch import score_chunk
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage.modelstore import LoadedModel

from ..conftest import ROOT

spark_engine = pytest.importorskip("tiffin.jobs.spark", reason="the Spark engine is the optional extra `spark`")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def session():
    spark = spark_engine.session("local[2]", app="tiffin-tests")
    yield spark
    spark.stop()


@pytest.fixture(scope="module")
def model(bike_spec: DatasetSpec, bike_raw: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> LoadedModel:
    """A small registered-model folder (pipeline + spec), as the store holds it."""
    train = Contract(bike_spec).validate(bike_raw.head(5000)).valid
    pipeline = build_pipeline(bike_spec, {"max_iter": 40}).fit(train, train["cnt"])
    folder = tmp_path_factory.mktemp("model")
    joblib.dump(pipeline, folder / "model.joblib")
    shutil.copy(ROOT / "specs/bike_sharing_rows.yaml", folder / "spec.yaml")
    return LoadedModel("bike_demand:spark-test", pipeline, bike_spec, {}, folder)


@pytest.fixture(scope="module")
def rows(bike_raw: pd.DataFrame) -> pd.DataFrame:
    """3,000 raw rows, four of them broken in different ways."""
    sample = bike_raw.sample(3000, random_state=11).drop(columns=["cnt", "casual", "registered"]).reset_index(drop=True)
    sample = sample.astype({"temp": object})
    sample.loc[0, "hr"] = "77"
    sample.loc[1, "temp"] = "warm"
    sample.loc[2, "weathersit"] = "Sunny"
    sample.loc[3, "dteday"] = "2012-02-30"
    return sample.astype({"temp": str})  # a raw export with a bad value keeps the column as text


@pytest.fixture
def pg_url(postgres_url: str):
    """The session's PostgreSQL database, emptied before and after (these tests write tables)."""

    def empty() -> None:
        engine = sa.create_engine(postgres_url)
        tables = sa.MetaData()
        tables.reflect(engine)
        tables.drop_all(engine)
        engine.dispose()

    empty()
    yield postgres_url
    empty()


def local_engine(model: LoadedModel, rows: pd.DataFrame):
    return score_chunk(Scorer(model.pipeline, model.spec), Contract(model.spec), rows)


def assert_same_as_local(output: Path, model: LoadedModel, rows: pd.DataFrame) -> None:
    expected = local_engine(model, rows)
    key = model.spec.key
    predictions = pd.read_parquet(output / "predictions")
    assert len(predictions) == len(expected.predictions) == len(rows) - 4
    merged = predictions.merge(expected.predictions.astype({k: str for k in key}), on=key, suffixes=("", "_local"))
    assert len(merged) == len(predictions)
    np.testing.assert_allclose(merged["prediction"], merged["prediction_local"], rtol=0, atol=1e-9)
    rejects = pd.read_parquet(output / "rejects").sort_values([*key, "field"]).reset_index(drop=True)
    local = expected.rejects.sort_values([*key, "field"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(rejects, local, check_dtype=False)


def test_from_parquet_the_spark_engine_matches_the_local_engine(session, model, rows, tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    rows.to_parquet(source, index=False)
    frame = spark_engine.read_parquet(session, str(source), model.spec, None, None).repartition(2)
    run = spark_engine.run(frame, model, str(tmp_path / "out"))
    assert (run.rows_scored, run.rows_rejected, run.rows_read) == (len(rows) - 4, 4, len(rows))
    assert_same_as_local(tmp_path / "out", model, rows)


@pytest.mark.postgres
def test_from_postgresql_over_jdbc_the_spark_engine_matches_the_local_engine(
    session, model, rows, pg_url: str, tmp_path: Path
) -> None:
    postgres_url = pg_url
    assert Path(spark_engine.POSTGRESQL_JDBC_JAR).exists(), "make test installs Debian's libpostgresql-jdbc-java"
    engine = db.engine_for(postgres_url)
    db.seed(engine, model.spec, rows)
    engine.dispose()
    frame = spark_engine.read_jdbc(session, postgres_url, model.spec, None, None, partitions=2)
    spark_engine.run(frame, model, str(tmp_path / "out"))
    assert_same_as_local(tmp_path / "out", model, rows)


def test_a_window_reads_only_its_days(session, model, rows, tmp_path: Path) -> None:
    source = tmp_path / "rows.parquet"
    rows.to_parquet(source, index=False)
    frame = spark_engine.read_parquet(session, str(source), model.spec, "2012-06-01", "2012-06-30")
    days = frame.select("dteday").distinct().toPandas()["dteday"]
    assert len(days) and days.between("2012-06-01", "2012-06-30").all()


@pytest.mark.postgres
def test_into_postgresql_the_spark_engine_writes_exactly_once_as_the_local_engine(
    session, model, rows, pg_url: str
) -> None:
    postgres_url = pg_url
    engine = db.engine_for(postgres_url)
    db.seed(engine, model.spec, rows)
    for _ in range(2):  # the second run must add nothing
        frame = spark_engine.read_jdbc(session, postgres_url, model.spec, None, None, partitions=2)
        spark_engine.run(frame, model, db_url=postgres_url)
    with engine.connect() as connection:
        predictions = pd.read_sql_table("predictions", connection)
        rejects = pd.read_sql_table("prediction_rejects", connection)
    engine.dispose()
    expected = local_engine(model, rows)
    assert len(predictions) == len(expected.predictions) and set(predictions["model"]) == {model.tag}
    merged = predictions.merge(expected.predictions, on=model.spec.key, suffixes=("", "_local"))
    np.testing.assert_allclose(merged["prediction"], merged["prediction_local"], rtol=0, atol=1e-9)
    assert sorted(rejects["field"]) == sorted(expected.rejects["field"]) and len(rejects) == 4
    assert predictions["run_id"].nunique() == 1  # the re-run changed no earlier result


def test_a_history_model_scores_on_spark_as_on_the_local_engine(session, bike_raw, tmp_path: Path) -> None:
    """Issue 15: the workers attach the feature table's rows exactly as the local batch does."""
    from tiffin.core.spec import load_spec
    from tiffin.features import store
    from tiffin.features.history import history_features

    spec = load_spec(ROOT / "specs/bike_sharing.yaml")
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")].reset_index(drop=True)
    valid = Contract(spec).validate(raw).valid
    train = valid.join(history_features(spec, valid))
    pipeline = build_pipeline(spec, {"max_iter": 30}).fit(train, train[spec.target])
    folder = tmp_path / "model"
    folder.mkdir()
    joblib.dump(pipeline, folder / "model.joblib")
    shutil.copy(ROOT / "specs/bike_sharing.yaml", folder / "spec.yaml")
    model = LoadedModel("bike_demand:spark-test", pipeline, spec, {}, folder)
    engine = db.engine_for(f"sqlite:///{tmp_path / 'source.db'}")
    db.seed(engine, spec, raw)
    store.materialize(engine, spec)
    history = store.read(engine, spec)
    february = raw[raw["dteday"] >= "2011-02-01"].reset_index(drop=True)
    february.to_parquet(tmp_path / "rows.parquet", index=False)

    frame = spark_engine.read_parquet(session, str(tmp_path / "rows.parquet"), spec, None, None).repartition(2)
    spark_engine.run(frame, model, str(tmp_path / "out"), history=history)
    local = score_chunk(Scorer(pipeline, spec), Contract(spec), february, history).predictions
    served = pd.read_parquet(tmp_path / "out/predictions").merge(local.astype({k: str for k in spec.key}), on=spec.key)
    assert len(served) == len(february) and served[["prediction_x"]].notna().all().all()
    np.testing.assert_allclose(served["prediction_x"], served["prediction_y"], rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="reads history features"):
        spark_engine.score(frame, model)
