"""The prediction log: every prediction with its inputs, model tag, role and time, for monitoring.

Two places, one `read`. The API's requests exist nowhere else, so it logs them whole into `prediction_log`:
it samples requests and writes from a background thread, so the answer never waits for the database (see
`AsyncLogger`). The inputs are columns of their own, typed from the spec and in the contract's canonical form
(dates as ISO text); `row_key` is the record's key as JSON, rendered the same way on every path, so actuals can
be joined later.

The batch runner's inputs are already in the source table: its log is by reference. Its `predictions` rows
(key, model, event time, prediction, scored_at) carry a `role`; `batch_rows` joins them to the source table by
key. Storage knows no contract rules: `tiffin.features.logged.read`, what monitoring reads, puts those raw inputs
through the contract and attaches the history features, so batch rows look exactly as they did when the batch
copied its inputs into this table, at no cost to the batch. What it cannot see: a source row changed or deleted
after scoring (its current values are read, or it is gone).
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
from collections.abc import Callable

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tiffin.core.spec import DatasetSpec
from tiffin.storage.bulk import BulkConnection
from tiffin.storage.clock import iso_now
from tiffin.storage.database import Window, create_tables

log = logging.getLogger("tiffin.predlog")

TABLE = "prediction_log"
CHAMPION, CHALLENGER = "champion", "challenger"
API, BATCH = "api", "batch"
# The batch runner's output table: its rows with a role are the batch's log entries (by reference).
BATCH_TABLE = "predictions"
COLUMNS = ["logged_at", "source", "model", "role", "row_key", "event_time", "prediction"]


_SQL_TYPES = {"int": sa.BigInteger(), "float": sa.Float(precision=53), "date": sa.Text(), "datetime": sa.Text()}


def log_table(spec: DatasetSpec, metadata: sa.MetaData | None = None, prefix: str = "") -> sa.Table:
    """The log's own columns, then one column per model input (typed from the spec)."""
    clash = set(spec.input_columns) & {"id", *COLUMNS}
    if clash:
        raise ValueError(f"input columns {sorted(clash)} clash with the prediction log's own columns")
    inputs = [sa.Column(name, _SQL_TYPES.get(spec.columns[name].type, sa.Text())) for name in spec.input_columns]
    inputs += [sa.Column(name, sa.Float(precision=53)) for name in spec.history_columns]
    return sa.Table(
        f"{prefix}{TABLE}", metadata or sa.MetaData(),
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True),
        # ISO text, like the batch tables: the same on SQLite (ADBC writes text) and PostgreSQL.
        sa.Column("logged_at", sa.Text(), nullable=False),
        sa.Column("source", sa.String(20), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("row_key", sa.Text(), nullable=False),
        sa.Column("event_time", sa.Text()),
        sa.Column("prediction", sa.Float(precision=53), nullable=False),
        *inputs,
        sa.Index(f"ix_{prefix}{TABLE}_event_time", "event_time"),
    )  # fmt: skip


def ensure_table(engine: Engine, spec: DatasetSpec, prefix: str = "") -> sa.Table:
    table = log_table(spec, prefix=prefix)
    create_tables(engine, table.metadata)
    return table


def _iso_text(column: pd.Series, unit: str) -> np.ndarray:
    """Datetimes as ISO text at `unit` ("D": 2012-06-01, "s": 2012-06-01T08:00:00); NaT as None."""
    text = column.to_numpy(dtype="datetime64[ns]").astype(f"datetime64[{unit}]").astype(str).astype(object)
    text[column.isna().to_numpy()] = None
    return text


def _dates_as_text(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy with datetime columns as ISO text: dates where every value is midnight, else to the second."""
    frame = frame.reset_index(drop=True).copy()
    for name in frame.select_dtypes("datetime").columns:
        values = frame[name].dropna()
        frame[name] = _iso_text(frame[name], "D" if (values == values.dt.normalize()).all() else "s")
    return frame


def _json_lines(frame: pd.DataFrame) -> list[str]:
    """One JSON object per row (pandas' C writer: a batch logs millions of rows); dates as ISO text."""
    frame = _dates_as_text(frame)
    if frame.empty:
        return []
    return frame.to_json(orient="records", lines=True, double_precision=10).rstrip("\n").split("\n")


def row_keys(spec: DatasetSpec, canonical: pd.DataFrame) -> list[str]:
    """Each row's key as a JSON object, rendered the same way wherever the row came from."""
    return _json_lines(canonical[spec.key])


def input_columns(spec: DatasetSpec, canonical: pd.DataFrame) -> pd.DataFrame:
    """The model inputs as the log stores them (history features included): canonical values, dates as ISO text."""
    names = [*spec.input_columns, *spec.history_columns]
    return _dates_as_text(canonical[[n for n in names if n in canonical.columns]])


def entries(
    spec: DatasetSpec,
    canonical: pd.DataFrame,
    predictions: np.ndarray | list[float],
    *,
    model: str,
    role: str,
    source: str,
    logged_at: str | None = None,
    shadow: tuple[str, np.ndarray] | None = None,
) -> pd.DataFrame:
    """Log rows for predictions of canonical (contract-validated) rows; with `shadow` (tag, predictions),
    the challenger's rows too (the same rows: only model, role and prediction differ)."""
    event_time = spec.event_time(canonical)
    own = pd.DataFrame(
        {
            "logged_at": logged_at or iso_now(),
            "source": source,
            "model": model,
            "role": role,
            "row_key": row_keys(spec, canonical),
            "event_time": _iso_text(pd.to_datetime(event_time), "s"),
            "prediction": np.asarray(predictions, dtype="float64"),
        },
        columns=COLUMNS,
    )
    rows = pd.concat([own, input_columns(spec, canonical)], axis=1)
    if shadow is None:
        return rows
    tag, values = shadow
    challenger = rows.assign(model=tag, role=CHALLENGER, prediction=np.asarray(values, dtype="float64"))
    return pd.concat([rows, challenger], ignore_index=True)


def write(
    engine: Engine,
    spec: DatasetSpec,
    rows: pd.DataFrame,
    table: sa.Table | None = None,
    bulk: BulkConnection | None = None,
) -> int:
    """Append log rows in one transaction: Arrow bulk ingest (ADBC) on PostgreSQL, through `bulk` when the caller
    keeps a connection open (the API's logger), else through one opened for this write.

    On SQLite through the engine's own driver: the API's worker reads the same file through it (the history lookup),
    and two copies of SQLite in one process corrupt a file that another process writes too (a copy that closes its
    descriptor drops the other copy's locks): with two workers logging through ADBC, "disk I/O error" at COMMIT and
    then "database disk image is malformed" (`tests/code/test_db.py`)."""
    if rows.empty:
        return 0
    table = table if table is not None else ensure_table(engine, spec)
    if bulk_ingests(engine):
        own = bulk is None
        bulk = BulkConnection(engine) if own else bulk
        try:
            bulk.write([(table, pa.Table.from_pandas(rows, preserve_index=False), {})], [])
        finally:
            if own:
                bulk.close()
        return len(rows)
    # The driver's executemany on plain tuples: a third of the time of SQLAlchemy's executemany of dicts.
    insert = table.insert().compile(dialect=engine.dialect, column_keys=list(rows.columns))
    if insert.positiontup is None:  # a driver with named parameters
        values = rows.astype(object).where(rows.notna(), None).to_dict("records")
    else:
        values = list(zip(*[_native(rows[name]) for name in insert.positiontup], strict=True))
    with engine.begin() as connection:
        connection.exec_driver_sql(str(insert), values)
    return len(rows)


def bulk_ingests(engine: Engine) -> bool:
    """Whether `write` appends through ADBC's bulk ingest (PostgreSQL's COPY): on SQLite never (see `write`)."""
    return engine.dialect.name == "postgresql"


def _native(column: pd.Series) -> list:
    """A column's values as Python objects a DB-API driver binds, missing ones (NaN, NA, NaT) as None."""
    return column.astype(object).where(column.notna(), None).tolist()


def read_stored(engine: Engine, spec: DatasetSpec, start: str, end: str, *, source: str | None = None
                ) -> pd.DataFrame:  # fmt: skip
    """The rows stored in the log table (the API's; the batch's before its log was by reference) whose event time
    lies in [start, end] (a date-only end: that whole day), as stored: the log's columns, then the inputs (dates
    as ISO text). Monitoring reads `tiffin.features.logged.read`, which adds the batch's rows."""
    table = ensure_table(engine, spec)
    query = sa.select(table).where(*Window.parse(start, end).conditions(table.c.event_time, text_sep="T"))
    if source:
        query = query.where(table.c.source == source)
    with engine.connect() as connection:
        return pd.read_sql(query.order_by(table.c.id), connection)


def batch_rows(engine: Engine, spec: DatasetSpec, start: str, end: str) -> pd.DataFrame | None:
    """The batch's logged predictions whose event time lies in [start, end], joined to their source rows by key:
    logged_at (scored_at), model, role, event_time, prediction, then the source's key and input columns, raw; in
    the order they were scored. None when nothing of the batch is logged (no table, or one from before)."""
    inspector = sa.inspect(engine)
    if not (inspector.has_table(BATCH_TABLE) and inspector.has_table(spec.source.table)):
        return None
    metadata = sa.MetaData()
    predictions = sa.Table(BATCH_TABLE, metadata, autoload_with=engine)
    if "role" not in predictions.c:  # a table from before the log by reference: nothing in it is logged
        return None
    source = sa.Table(spec.source.table, metadata, autoload_with=engine)
    wanted = [name for name in dict.fromkeys([*spec.key, *spec.input_columns]) if name in source.c]
    on = sa.and_(*[predictions.c[k] == source.c[k] for k in spec.key])
    own = [predictions.c.scored_at.label("logged_at"), predictions.c.model, predictions.c.role,
           predictions.c.event_time, predictions.c.prediction]  # fmt: skip
    when = _moment_conditions(predictions.c.event_time, Window.parse(start, end), engine.dialect.name)
    query = (
        sa.select(*own, *[source.c[name] for name in wanted])
        .select_from(predictions.join(source, on))
        .where(predictions.c.role.is_not(None), *when)
        .order_by(predictions.c.scored_at, predictions.c.role, *[predictions.c[k] for k in spec.key])
    )
    with engine.connect() as connection:
        return pd.read_sql(query, connection)


def _moment_conditions(column: sa.Column, window: Window, dialect: str) -> list[sa.ColumnElement]:
    """The window on the batch's event time: a timestamp on PostgreSQL; on SQLite, ISO text to the microsecond
    (as ADBC writes it), so the bounds are that text too: start inclusive, the first moment after the end exclusive."""
    if dialect != "sqlite":
        return window.conditions(column)
    found = []
    if window.start is not None:
        found.append(column >= window.start.isoformat(sep="T", timespec="microseconds"))
    if window.end is not None:
        found.append(column < window.upper_exclusive().isoformat(sep="T", timespec="microseconds"))
    return found


def as_logged(spec: DatasetSpec, canonical: pd.DataFrame, rows: pd.DataFrame) -> pd.DataFrame:
    """`batch_rows` as the log table stores rows (`id` null), given their inputs in canonical form (history
    features included): what the batch wrote here when it copied its inputs."""
    own = pd.DataFrame(
        {
            "id": pd.array([None] * len(rows), dtype="Int64"),
            "logged_at": pd.to_datetime(rows["logged_at"]).dt.strftime("%Y-%m-%dT%H:%M:%S.%f").to_numpy(),
            "source": BATCH,
            "model": rows["model"].to_numpy(),
            "role": rows["role"].to_numpy(),
            "row_key": row_keys(spec, canonical),
            "event_time": _iso_text(pd.to_datetime(rows["event_time"]), "s"),
            "prediction": rows["prediction"].to_numpy(dtype="float64"),
        }
    )
    return pd.concat([own, input_columns(spec, canonical)], axis=1)


def _joined(parts: list) -> np.ndarray | list:
    if isinstance(parts[0], np.ndarray):
        return np.concatenate(parts)
    return list(itertools.chain.from_iterable(parts))  # categories: lists of str or None, kept as objects


class AsyncLogger:
    """The API's logger: sample requests, hand them to a thread, never block the answer.

    `submit` only appends a request's canonical columns (the serving validator's own output) to a
    bounded queue: microseconds. Every `flush_seconds` the thread takes everything queued, scores it
    with the shadow model if there is one, and writes both models' rows in one insert (on PostgreSQL through one
    connection it keeps open). What the log costs the answering event loop grows with the number of
    writes, not their size: each write hands the GIL back and forth, and each hand-off can make the
    loop wait a switch interval (5 ms). Hence one write a second, not one per request. When the queue
    is full, requests are dropped and counted, never waited on.
    """

    def __init__(
        self,
        engine: Engine,
        spec: DatasetSpec,
        model: str,
        *,
        sample: float = 0.1,
        shadow: tuple[str, Callable[[pd.DataFrame], np.ndarray]] | None = None,
        max_queued: int = 10_000,
        flush_seconds: float = 1.0,
        on_dropped: Callable[[int], None] | None = None,
        on_written: Callable[[str, int], None] | None = None,
    ) -> None:
        self.engine, self.spec, self.model = engine, spec, model
        self.sample, self.shadow = sample, shadow
        self.flush_seconds = flush_seconds
        self.queue: queue.Queue[tuple[dict, list[float]]] = queue.Queue(maxsize=max_queued)
        self.on_dropped = on_dropped or (lambda n: None)
        self.on_written = on_written or (lambda role, n: None)
        self.table = ensure_table(engine, spec)
        self._bulk: BulkConnection | None = None  # opened by the thread at its first write, kept open
        self._integers = [n for n in spec.input_columns if spec.columns[n].type == "int"]
        self._random = random.Random()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, columns: dict, predictions: list[float]) -> None:
        if self.sample < 1.0 and self._random.random() >= self.sample:
            return
        try:
            self.queue.put_nowait((columns, predictions))
        except queue.Full:
            self.on_dropped(len(predictions))

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the thread."""
        self._stop.set()
        self._thread.join(timeout)

    def _run(self) -> None:
        # One write a flush interval, whatever the request rate: the thread's share of the GIL stays small.
        while not self._stop.wait(self.flush_seconds):
            self._flush()
        self._flush()
        if self._bulk is not None:
            self._bulk.close()

    def _flush(self) -> None:
        batch = []
        while True:
            try:
                batch.append(self.queue.get_nowait())
            except queue.Empty:
                break
        if not batch:
            return
        try:
            self._write(batch)
        except Exception:  # the log must never take the service down
            log.exception("prediction log: %d requests not written", len(batch))
            if self._bulk is not None:  # perhaps a dropped connection: the next write opens a new one
                self._bulk.close()
                self._bulk = None
            self.on_dropped(sum(len(predictions) for _, predictions in batch))

    def _canonical(self, batch: list[tuple[dict, list[float]]]) -> pd.DataFrame:
        """One frame from many requests' columns (numpy arrays, or lists for categories)."""
        frame = pd.DataFrame({name: _joined([columns[name] for columns, _ in batch]) for name in batch[0][0]})
        for name in self._integers:  # the validator keeps numbers as float64; the contract's ints are Int64
            frame[name] = frame[name].round().astype("Int64")
        return frame

    def _write(self, batch: list[tuple[dict, list[float]]]) -> None:
        canonical = self._canonical(batch)
        predictions = np.asarray([p for _, values in batch for p in values], dtype="float64")
        shadow = None
        if self.shadow is not None:
            try:
                shadow = (self.shadow[0], self.shadow[1](canonical))
            except Exception:  # the challenger's failure never costs the champion's log
                log.exception("prediction log: the shadow model %s could not score %d rows", self.shadow[0],
                              len(canonical))  # fmt: skip
        rows = entries(self.spec, canonical, predictions, model=self.model, role=CHAMPION, source=API, shadow=shadow)
        if self._bulk is None and bulk_ingests(self.engine):  # one ADBC connection, kept
            self._bulk = BulkConnection(self.engine)
        write(self.engine, self.spec, rows, self.table, self._bulk)
        for role, count in rows["role"].value_counts().items():
            self.on_written(role, int(count))
