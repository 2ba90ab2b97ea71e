"""Batch scoring: a window of the source table -> predictions in the same database, exactly once.

Each chunk is read, checked by the contract, scored and written in one transaction, so a run that
is killed leaves whole chunks only. Predictions are unique on (key, model) and inserted with
"on conflict do nothing": re-running a window, or overlapping windows, adds nothing and changes no
earlier result. Chunks are read by key (keyset pagination) and skip keys this model has already
scored, so memory stays flat with the table's size and a re-run only finishes what is missing.
Rows that break the contract go to `prediction_rejects` with field, value and rule; every run is
recorded in `batch_runs`.

Bulk reads and writes go through ADBC (Arrow-native drivers) for SQLite and PostgreSQL.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tqdm import tqdm

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.serving.scorer import Scorer
from tiffin.storage import predlog
from tiffin.storage.bulk import BulkConnection
from tiffin.storage.clock import utcnow
from tiffin.storage.database import bound_values, source_table, window_bounds, window_span

log = logging.getLogger("tiffin.batch")

SUCCESS, PARTIAL, FAILED, RUNNING = "success", "partial", "failed", "running"
EXIT_CODES = {SUCCESS: 0, FAILED: 1, PARTIAL: 3}


def _moment_type() -> sa.types.TypeEngine:
    # ADBC writes SQLite timestamps as ISO text ('2012-06-01T08:00:00'); keep them text there.
    return sa.DateTime().with_variant(sa.Text(), "sqlite")


@dataclass(frozen=True)
class BatchTables:
    predictions: sa.Table
    rejects: sa.Table
    runs: sa.Table
    watermarks: sa.Table


def batch_tables(engine: Engine, spec: DatasetSpec, source: sa.Table, prefix: str = "") -> BatchTables:
    """The output tables (created if missing); keys have the source's column types."""
    metadata = sa.MetaData()
    keys = [sa.Column(k, source.c[k].type, primary_key=True) for k in spec.key]
    predictions = sa.Table(
        f"{prefix}predictions", metadata, *keys,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("event_time", _moment_type()),
        sa.Column("prediction", sa.Float(precision=53), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("scored_at", _moment_type(), nullable=False),
    )  # fmt: skip
    rejects = sa.Table(
        f"{prefix}prediction_rejects", metadata,
        *[sa.Column(k, sa.Text(), primary_key=True) for k in spec.key],
        sa.Column("field", sa.String(200), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("value", sa.Text()),
        sa.Column("rule", sa.Text(), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("rejected_at", _moment_type(), nullable=False),
    )  # fmt: skip
    runs = sa.Table(
        f"{prefix}batch_runs", metadata,
        sa.Column("run_id", sa.String(36), primary_key=True),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("model", sa.String(200), nullable=False),
        sa.Column("window_start", sa.Text()),
        sa.Column("window_end", sa.Text()),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime()),
        sa.Column("rows_read", sa.BigInteger(), nullable=False, default=0),
        sa.Column("rows_scored", sa.BigInteger(), nullable=False, default=0),
        sa.Column("rows_rejected", sa.BigInteger(), nullable=False, default=0),
        sa.Column("duration_s", sa.Float()),
        sa.Column("status", sa.String(20), nullable=False),
        sa.Column("error", sa.Text()),
    )  # fmt: skip
    watermarks = sa.Table(
        f"{prefix}batch_watermarks", metadata,
        sa.Column("source", sa.String(200), primary_key=True),
        sa.Column("model_name", sa.String(200), primary_key=True),
        sa.Column("window_end", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
    )  # fmt: skip
    metadata.create_all(engine)
    return BatchTables(predictions, rejects, runs, watermarks)


@dataclass(frozen=True)
class ScoredChunk:
    predictions: pd.DataFrame  # key columns, event_time, prediction
    rejects: pd.DataFrame  # key columns (as text), field, value, rule
    rejected_rows: int
    valid: pd.DataFrame  # the scored rows in canonical form (for the prediction log and a shadow model)


def score_chunk(scorer: Scorer, contract: Contract, chunk: pd.DataFrame) -> ScoredChunk:
    """The batch engines' one scoring step: contract, features, model. Local and Spark run this."""
    result = contract.validate(chunk, serving=True)
    valid, key = result.valid, scorer.spec.key
    predictions = scorer.predict(valid) if len(valid) else []
    scored = chunk.loc[valid.index, key].reset_index(drop=True)
    scored["event_time"] = scorer.spec.event_time(valid).to_numpy(dtype="datetime64[us]")
    scored["prediction"] = np.asarray(predictions, dtype="float64")
    rejects = result.rejects[[*key, "field", "value", "rule"]].astype(
        {k: str for k in key} | {"field": str, "value": str, "rule": str}
    )
    return ScoredChunk(scored, rejects.reset_index(drop=True), result.rejected_rows, valid)


@dataclass
class RunSummary:
    run_id: str
    model: str
    window_start: str
    window_end: str
    status: str = RUNNING
    rows_read: int = 0
    rows_scored: int = 0
    rows_rejected: int = 0
    duration_s: float = 0.0
    error: str | None = None
    chunks: int = field(default=0, repr=False)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def line(self) -> str:
        return (f"batch {self.status}: {self.rows_scored} scored, {self.rows_rejected} rejected of "
                f"{self.rows_read} read, window {self.window_start} .. {self.window_end}, model {self.model}, "
                f"{self.duration_s:.1f} s ({self.rows_read / max(self.duration_s, 1e-9):,.0f} rows/s), "
                f"run {self.run_id}")  # fmt: skip


class BatchJob:
    """One run of batch scoring over a window, with one model."""

    def __init__(self, engine: Engine, scorer: Scorer, tag: str, *, chunk_rows: int = 100_000, prefix: str = "",
                 shadow: tuple[str, Scorer] | None = None, log_predictions: bool = True):  # fmt: skip
        """`shadow`: a challenger (tag, scorer) that scores the same rows into the same tables.
        `log_predictions`: also write every prediction, with its inputs, to the prediction log."""
        self.engine = engine
        self.scorer = scorer
        self.spec = scorer.spec
        self.tag = tag
        self.chunk_rows = chunk_rows
        self.shadow = shadow
        self.contract = Contract(self.spec)
        self.source = source_table(engine, self.spec)
        self.tables = batch_tables(engine, self.spec, self.source, prefix)
        self.log_table = predlog.ensure_table(engine, self.spec, prefix) if log_predictions else None

    # -- the window ----------------------------------------------------------------------------

    def window(self, start: str | None, end: str | None, since_last: bool) -> tuple[str, str]:
        low, high = window_span(self.engine, self.spec)
        if since_last:
            marks = self.tables.watermarks
            with self.engine.connect() as connection:
                mark = connection.execute(
                    sa.select(marks.c.window_end).where(
                        marks.c.source == self.source.name, marks.c.model_name == self.tag.split(":")[0]
                    )
                ).scalar_one_or_none()
            # Inclusive: the last window's end may have received rows since (they are not scored yet).
            start = mark or start
        if low is None:
            raise LookupError(f"{self.source.name} is empty: nothing to score")
        return _iso(start or low), _iso(end or high)

    def _selection(self, start: str, end: str) -> sa.Select:
        column = self.source.c[self.spec.source.window_column]
        lower, upper = bound_values(column, *window_bounds(start, end))
        predictions = self.tables.predictions
        already = sa.exists().where(
            *[predictions.c[k] == self.source.c[k] for k in self.spec.key], predictions.c.model == self.tag
        )
        wanted = [self.source.c[n] for n in self.spec.input_columns if n in self.source.c]
        keys = [self.source.c[k] for k in self.spec.key]
        return sa.select(*dict.fromkeys(keys + wanted)).where(column >= lower, column < upper, ~already)

    def count(self, start: str, end: str) -> int:
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(sa.func.count()).select_from(self._selection(start, end).subquery())
            ).scalar_one()

    def chunks(self, bulk: BulkConnection, start: str, end: str) -> Iterator[pd.DataFrame]:
        """Rows not yet scored by this model, in key order, `chunk_rows` at a time."""
        keys = [self.source.c[k] for k in self.spec.key]
        selection = self._selection(start, end).order_by(*keys).limit(self.chunk_rows)
        last = None
        while True:
            query = selection if last is None else selection.where(sa.tuple_(*keys) > sa.tuple_(*last))
            chunk = bulk.read(query)
            if chunk.empty:
                return
            yield chunk
            last = [_python(v) for v in chunk[self.spec.key].iloc[-1]]

    # -- one chunk -------------------------------------------------------------------------------

    def score_all(self, chunk: pd.DataFrame, run_id: str, now: object) -> tuple[list[tuple], int, int]:
        """Everything one chunk writes: (table, rows, constant columns) triples; rows scored, rows rejected."""
        scored = score_chunk(self.scorer, self.contract, chunk)
        same = {"run_id": run_id, "model": self.tag}
        writes = [
            (self.tables.predictions, _arrow(scored.predictions), {**same, "scored_at": now}),
            (self.tables.rejects, _arrow(scored.rejects), {**same, "rejected_at": now}),
        ]
        shadowed = None
        if self.shadow is not None and len(scored.valid):
            tag, scorer = self.shadow
            shadowed = (tag, scorer.predict(scored.valid))
            writes.append((self.tables.predictions, _arrow(scored.predictions.assign(prediction=shadowed[1])),
                           {**same, "model": tag, "scored_at": now}))  # fmt: skip
        if self.log_table is not None and len(scored.valid):
            logged = predlog.entries(self.spec, scored.valid, scored.predictions["prediction"].to_numpy(),
                                     model=self.tag, role=predlog.CHAMPION, source=predlog.BATCH, logged_at=_iso(now),
                                     shadow=shadowed)  # fmt: skip
            writes.append((self.log_table, _arrow(logged), {}))
        return writes, len(scored.predictions), scored.rejected_rows

    # -- the run ---------------------------------------------------------------------------------

    def run(self, start: str | None = None, end: str | None = None, since_last: bool = False) -> RunSummary:
        began = time.perf_counter()
        start, end = self.window(start, end, since_last)
        summary = RunSummary(str(uuid.uuid4()), self.tag, start, end)
        self._record_start(summary)
        if self.engine.dialect.name == "sqlite":  # a reader and a writer at once need the WAL journal
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        bulk: list[BulkConnection] = []
        try:
            # The count is a second pass over the window: only worth it for a progress bar on a terminal
            # (tqdm's disable=None hides the bar elsewhere: cron, CI, logs).
            total = self.count(start, end) if sys.stderr.isatty() else None
            # From here until they close, only the bulk connections touch the database (db.engine_for).
            bulk = [BulkConnection(self.engine), BulkConnection(self.engine)]
            with tqdm(total=total, desc="batch", unit="row", disable=None) as progress:
                self._pipeline(*bulk, start, end, summary, progress)
            summary.status = PARTIAL if summary.rows_rejected else SUCCESS
        except Exception as error:
            summary.status, summary.error = FAILED, f"{type(error).__name__}: {error}"
            raise
        finally:
            for connection in bulk:
                connection.close()
            summary.duration_s = round(time.perf_counter() - began, 3)
            self._record_end(summary)
        return summary

    def _pipeline(self, reader: BulkConnection, writer: BulkConnection, start: str, end: str,
                  summary: RunSummary, progress: tqdm) -> None:  # fmt: skip
        """Read chunk k+1 and write chunk k-1 while chunk k is scored (the drivers release the GIL).

        Writes stay in order, one transaction per chunk; a failed write stops the run.
        """
        chunks = self.chunks(reader, start, end)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="batch-io") as pool:
            upcoming = pool.submit(next, chunks, None)
            writing = None
            while (chunk := upcoming.result()) is not None:
                upcoming = pool.submit(next, chunks, None)
                write = self._scored_chunk(writer, chunk, summary)
                if writing is not None:
                    writing.result()
                writing = pool.submit(write)
                progress.update(len(chunk))
            if writing is not None:
                writing.result()

    def _scored_chunk(self, bulk: BulkConnection, chunk: pd.DataFrame, summary: RunSummary) -> Callable[[], None]:
        """Score one chunk now; return its write (one transaction) to run next, in order."""
        now = _timestamp(self.engine)
        writes, rows_scored, rejected_rows = self.score_all(chunk, summary.run_id, now)
        summary.rows_read += len(chunk)
        summary.rows_scored += rows_scored
        summary.rows_rejected += rejected_rows
        summary.chunks += 1
        runs = self.tables.runs
        progress = bulk.sql(
            runs.update().where(runs.c.run_id == summary.run_id).values(
                rows_read=summary.rows_read, rows_scored=summary.rows_scored, rows_rejected=summary.rows_rejected
            )
        )  # fmt: skip
        event = {"event": "chunk", "run_id": summary.run_id, "chunk": summary.chunks, "rows": len(chunk),
                 "scored": rows_scored, "rejected": rejected_rows}  # fmt: skip

        def write() -> None:
            bulk.write(writes, [progress])
            log.info(json.dumps(event))

        return write

    def _record_start(self, summary: RunSummary) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.tables.runs.insert().values(
                run_id=summary.run_id, source=self.source.name, model=self.tag, window_start=summary.window_start,
                window_end=summary.window_end, started_at=utcnow(), status=RUNNING,
                rows_read=0, rows_scored=0, rows_rejected=0,
            ))  # fmt: skip

    def _record_end(self, summary: RunSummary) -> None:
        runs, marks = self.tables.runs, self.tables.watermarks
        with self.engine.begin() as connection:
            connection.execute(runs.update().where(runs.c.run_id == summary.run_id).values(
                finished_at=utcnow(), duration_s=summary.duration_s,
                status=summary.status, error=summary.error, rows_read=summary.rows_read,
                rows_scored=summary.rows_scored, rows_rejected=summary.rows_rejected,
            ))  # fmt: skip
            if summary.status in (SUCCESS, PARTIAL):
                key = {"source": self.source.name, "model_name": self.tag.split(":")[0]}
                connection.execute(marks.delete().where(marks.c.source == key["source"],
                                                        marks.c.model_name == key["model_name"]))  # fmt: skip
                connection.execute(marks.insert().values(
                    **key, window_end=summary.window_end, updated_at=utcnow()
                ))  # fmt: skip


def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _timestamp(engine: Engine) -> object:
    """Now, as the moment columns store it (ISO text on SQLite, like ADBC's own timestamps)."""
    now = utcnow()
    return now.isoformat(timespec="microseconds") if engine.dialect.name == "sqlite" else now


def _iso(value: object) -> str:
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _python(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
