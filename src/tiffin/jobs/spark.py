"""Batch scoring on Apache Spark: the same contract, features and model, over partitions.

`mapInPandas` hands each Python worker Arrow batches of raw rows; the worker loads the model once
(it reaches the executors as a broadcast of the registered pipeline file and its spec) and runs
`tiffin.batch.score_chunk`, the local engine's own scoring step. Predictions and rejects come back as
one typed union and are written to Parquet (or appended to database tables through JDBC).

PySpark is the optional extra `spark` (`uv sync --extra spark`); nothing here is imported by the API or the
local engine.
"""

from __future__ import annotations

import hashlib
import io
import os
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import joblib
import pandas as pd
import sqlalchemy as sa
import yaml
from sqlalchemy.dialects.postgresql import insert

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import store
from tiffin.jobs.batch import batch_tables, score_chunk
from tiffin.serving.scorer import Scorer
from tiffin.storage.clock import utcnow
from tiffin.storage.database import engine_for, source_table, window_bounds
from tiffin.storage.modelstore import MODEL_FILE, SPEC_FILE, LoadedModel

POSTGRESQL_JDBC_JAR = "/usr/share/java/postgresql.jar"  # Debian's libpostgresql-jdbc-java
_MODELS: dict[str, object] = {}  # per Python worker: model hash -> (scorer, contract)


@dataclass(frozen=True)
class SparkRun:
    rows_read: int
    rows_scored: int
    rows_rejected: int
    seconds: float
    output: str

    def line(self) -> str:
        rate = self.rows_read / max(self.seconds, 1e-9)
        return (f"spark batch: {self.rows_scored} scored, {self.rows_rejected} rejected of {self.rows_read} read, "
                f"{self.seconds:.1f} s ({rate:,.0f} rows/s) -> {self.output}")  # fmt: skip


def session(master: str = "local[*]", app: str = "tiffin-batch", jars: list[str] | None = None):
    """A SparkSession with Arrow batches sized for scoring and the JDBC drivers on the class path."""
    from pyspark.sql import SparkSession

    jars = [j for j in (jars or [POSTGRESQL_JDBC_JAR]) if Path(j).exists()]
    if master.startswith("local"):  # workers run this interpreter; on a cluster, PYSPARK_PYTHON decides
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(master)
        .appName(app)
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "50000")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
    )
    if jars:
        builder = builder.config("spark.jars", ",".join(jars))
    return builder.getOrCreate()


def read_parquet(spark, path: str, spec: DatasetSpec, start: str | None, end: str | None):
    frame = spark.read.parquet(path)
    return _in_window(frame, spec, start, end)


def read_jdbc(spark, db_url: str, spec: DatasetSpec, start: str | None, end: str | None, partitions: int = 0):
    """The source table over JDBC (PostgreSQL), the window pushed down to the database."""
    reader = spark.read.format("jdbc").options(**jdbc_options(db_url), dbtable=spec.source.table, fetchsize="50000")
    frame = _in_window(reader.load(), spec, start, end)
    return frame.repartition(partitions) if partitions else frame


def jdbc_options(db_url: str) -> dict[str, str]:
    """Spark's JDBC options for a SQLAlchemy PostgreSQL URL."""
    url = sa.engine.make_url(db_url)
    if url.get_backend_name() != "postgresql":
        raise NotImplementedError("the Spark engine reads and writes PostgreSQL over JDBC; not " + url.drivername)
    options = {
        "url": f"jdbc:postgresql://{url.host or 'localhost'}:{url.port or 5432}/{url.database}",
        "driver": "org.postgresql.Driver",
        "user": url.username or "",
    }
    return options | ({"password": url.password} if url.password else {})


def _in_window(frame, spec: DatasetSpec, start: str | None, end: str | None):
    from pyspark.sql import functions as F

    column = F.col(spec.source.window_column)
    if start:
        lower, _ = window_bounds(start, start)
        frame = frame.where(column >= _as_text(lower))
    if end:
        _, upper = window_bounds(end, end)
        frame = frame.where(column < _as_text(upper))
    return frame.select(*dict.fromkeys([*spec.key, *[c for c in spec.input_columns if c in frame.columns]]))


def _as_text(moment) -> str:
    return moment.date().isoformat() if moment.time() == moment.min.time() else moment.isoformat(sep=" ")


def output_schema(spec: DatasetSpec) -> str:
    """One row per prediction or per problem: `kind` says which; keys as text, as in the rejects table."""
    keys = ", ".join(f"`{k}` string" for k in spec.key)
    return (f"{keys}, kind string, event_time timestamp, prediction double, "
            "field string, value string, rule string")  # fmt: skip


def _scorer_for(model_bytes: bytes, spec_text: str):
    """Load the model once per Python worker (the broadcast is fetched once, too)."""
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest not in _MODELS:
        spec = DatasetSpec.model_validate(yaml.safe_load(spec_text))
        _MODELS[digest] = (Scorer(joblib.load(io.BytesIO(model_bytes)), spec), Contract(spec))
    return _MODELS[digest]


def score(frame, model: LoadedModel, history: pd.DataFrame | None = None):
    """Predictions and rejects (as one union DataFrame) for a Spark DataFrame of raw rows. `history`: the feature
    table's rows for the window (a model with history features), sent to every worker as the local engine uses them."""
    if model.spec.history and history is None:
        raise ValueError(f"{model.tag} reads history features: give the feature table's rows for the window "
                         "(`tiffin features materialize`, then `features.store.read`)")  # fmt: skip
    spark = frame.sparkSession
    model_bytes = spark.sparkContext.broadcast((model.path / MODEL_FILE).read_bytes())
    spec_text = spark.sparkContext.broadcast((model.path / SPEC_FILE).read_text())
    features = spark.sparkContext.broadcast(store.by_key(model.spec, history) if history is not None else None)
    key = model.spec.key

    def score_partition(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        scorer, contract = _scorer_for(model_bytes.value, spec_text.value)
        for batch in batches:
            scored = score_chunk(scorer, contract, batch, features.value)
            predictions = scored.predictions.assign(kind="prediction", field=None, value=None, rule=None)
            rejects = scored.rejects.assign(kind="reject", event_time=pd.NaT, prediction=float("nan"))
            parts = [part for part in (predictions, rejects) if len(part)]
            union = pd.concat(parts, ignore_index=True) if parts else predictions
            union[key] = union[key].astype(str)
            yield union[[*key, "kind", "event_time", "prediction", "field", "value", "rule"]]

    return frame.mapInPandas(score_partition, output_schema(model.spec))


def run(frame, model: LoadedModel, output: str | None = None, db_url: str | None = None,
        history: pd.DataFrame | None = None) -> SparkRun:  # fmt: skip
    """Score, then write `output`/predictions and `output`/rejects (Parquet, replaced on a re-run), or
    into the database's `predictions` and `prediction_rejects`, exactly once per (key, model)."""
    began = time.perf_counter()
    union = score(frame, model, history).cache()
    key = model.spec.key
    predictions = union.where("kind = 'prediction'").select(*key, "event_time", "prediction")
    rejects = union.where("kind = 'reject'").select(*key, "field", "value", "rule")
    if db_url:
        write_tables(predictions, rejects, model, db_url)
        output = sa.engine.make_url(db_url).render_as_string(hide_password=True)
    else:
        predictions.write.mode("overwrite").parquet(f"{output}/predictions")
        rejects.write.mode("overwrite").parquet(f"{output}/rejects")
    scored, problems = predictions.count(), rejects.count()
    rejected_rows = rejects.select(*key).distinct().count() if problems else 0
    union.unpersist()
    return SparkRun(scored + rejected_rows, scored, rejected_rows, round(time.perf_counter() - began, 2), output)


def write_tables(predictions, rejects, model: LoadedModel, db_url: str) -> None:
    """As the local engine writes: staging tables over JDBC, then insert-or-ignore into the real ones."""
    engine = engine_for(db_url)
    tables = batch_tables(engine, model.spec, source_table(engine, model.spec))
    run_id, now = str(uuid.uuid4()), utcnow()
    for frame, target, stamp in ((predictions, tables.predictions, "scored_at"),
                                 (rejects, tables.rejects, "rejected_at")):  # fmt: skip
        staging = f"staging_spark_{target.name}"
        frame.write.format("jdbc").options(**jdbc_options(db_url), dbtable=staging).mode("overwrite").save()
        source = sa.Table(staging, sa.MetaData(), autoload_with=engine)
        columns = [c.name for c in source.columns]
        typed = [sa.cast(source.c[c], target.c[c].type) for c in columns]
        constants = {"model": model.tag, "run_id": run_id, stamp: now}
        select = sa.select(*typed, *[sa.literal(v, target.c[k].type) for k, v in constants.items()])
        with engine.begin() as connection:
            connection.execute(insert(target).from_select([*columns, *constants], select).on_conflict_do_nothing())
            connection.execute(sa.text(f'DROP TABLE "{staging}"'))
    engine.dispose()
