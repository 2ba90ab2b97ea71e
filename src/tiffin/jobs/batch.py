"""Batch scoring: a window of the source table -> predictions in the same database, exactly once.

Each chunk is read, checked by the contract, scored and written in one transaction, so a run that
is killed leaves whole chunks only. Predictions are unique on (key, model) and inserted with
"on conflict do nothing": re-running a window, or overlapping windows, adds nothing and changes no
earlier result. Only keys this model has not scored are read: a history model's window in time slices,
each read with its features; otherwise by key (keyset pagination, keys as bound values). Memory stays
flat with the table's size and a re-run only finishes what is missing. Rows that break the contract go
to `prediction_rejects` with field, value and rule, and are not taken up again by the same model until
the source row changes (or `retry_rejects`); every run is recorded in `batch_runs`.

The window (`storage.database.Window`): start inclusive, end inclusive at the window column's
granularity; without an end, every row present. The watermark (`--since-last`) only moves forward,
and only to the latest window value of a row this model scored or rejected. One run at a time per
source table: a PostgreSQL advisory lock, or a lock file beside the SQLite file; a run that finds
the lock free marks runs left `running` by a dead process as `abandoned`.

Bulk reads and writes go through ADBC (Arrow-native drivers) for SQLite and PostgreSQL.
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import json
import logging
import math
import multiprocessing.util
import os
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from functools import partial

import numpy as np
import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from tiffin.core import exitcodes
from tiffin.core.contract import Contract, shown
from tiffin.core.spec import DatasetSpec
from tiffin.features import store
from tiffin.jobs.processes import ScoringProcesses, can_fork
from tiffin.serving.scorer import Scorer
from tiffin.storage import predlog
from tiffin.storage.bulk import BulkConnection
from tiffin.storage.clock import utcnow
from tiffin.storage.database import Window, create_tables, source_table
from tiffin.storage.locks import Busy, ProcessLock

log = logging.getLogger("tiffin.batch")

SUCCESS, PARTIAL, FAILED, RUNNING, ABANDONED = "success", "partial", "failed", "running", "abandoned"
EXIT_CODES = {SUCCESS: exitcodes.OK, FAILED: exitcodes.FAILURE, PARTIAL: exitcodes.PARTIAL}
EXIT_BUSY = exitcodes.BUSY
WINDOW_UNREADABLE = "window value unreadable"
DIED = "the process ended without finishing (killed, or its database connection was lost)"
# Rows per read/score/write transaction. 25,000 keeps a 1 M-row window's peak memory within 5 % of a
# 100 k-row one (100,000: 20-29 % above); against 100,000, SQLite 5-12 % slower, PostgreSQL 10-25 % faster.
CHUNK_ROWS = 25_000
# About how many rows a time slice of a history model's run holds, by default: each slice's features are
# materialized (with the lookback before it) and held only while its chunks are scored, so memory follows the slice,
# not the window. With each slice materialized and scored in one scoring process, the next in another, 25,000 keeps
# a 1 M-row window's peak PSS 1-4 % above a 104 k-row one (`make bench`, 2026-12-07 night; when slices were
# materialized apart from their scoring, 3-10 %, and 50,000: 9-20 %, 1.17 x as fast in one run); the whole window at
# once: 2.8 x.
SLICE_ROWS = 25_000
# Slices are planned a tenth under a whole number of chunks (`default_slice_rows`): cut at whole days from the average
# rows a day, one a little over a chunk left a small remainder chunk, with a scoring round trip and a write
# transaction of its own (when slices were read a chunk at a time, also a read that walked the slice again: 45 reads
# instead of 64 at 1 M rows on SQLite, 4-7 % faster, A/B 2026-12-07). Days far above the average still spill over.
SLICE_SHARE_OF_CHUNK = 0.9


def default_slice_rows(chunk_rows: int) -> int:
    """About `SLICE_ROWS`, a tenth under a whole number of `chunk_rows` chunks."""
    chunks = max(1, math.ceil(SLICE_ROWS / chunk_rows))
    return max(1, int(chunks * chunk_rows * SLICE_SHARE_OF_CHUNK))


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
        f"{prefix}{predlog.BATCH_TABLE}", metadata, *keys,
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("event_time", _moment_type()),
        sa.Column("prediction", sa.Float(precision=53), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=False),
        sa.Column("scored_at", _moment_type(), nullable=False),
        # The prediction log by reference: champion or challenger for a logged prediction (its inputs are the
        # source row's, read by key when monitoring runs); null when the run did not log (`--no-log`).
        sa.Column("role", sa.String(20)),
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
        # What the source row held when rejected: the same row is not read again unless it changes.
        sa.Column("row_hash", sa.String(40)),
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
    create_tables(engine, metadata)
    _add_missing_columns(engine, rejects)
    _add_missing_columns(engine, predictions)
    return BatchTables(predictions, rejects, runs, watermarks)


def _add_missing_columns(engine: Engine, table: sa.Table) -> None:
    """Tables made by an earlier version lack newer nullable columns: add them (as create_all does not)."""
    present = {column["name"] for column in sa.inspect(engine).get_columns(table.name)}
    with engine.begin() as connection:
        for column in table.columns:
            if column.name not in present:
                kind = column.type.compile(dialect=engine.dialect)
                connection.exec_driver_sql(f'ALTER TABLE "{table.name}" ADD COLUMN "{column.name}" {kind}')


@dataclass(frozen=True)
class ScoredChunk:
    predictions: pd.DataFrame  # key columns, event_time, prediction
    rejects: pd.DataFrame  # key columns (as text), field, value, rule
    rejected_rows: int
    valid: pd.DataFrame  # the scored rows in canonical form (for the prediction log and a shadow model)
    reject_positions: np.ndarray  # each reject line's row in the chunk (its position)


def score_chunk(scorer: Scorer, contract: Contract, chunk: pd.DataFrame, history: pd.DataFrame | None = None
                ) -> ScoredChunk:  # fmt: skip
    """The batch engines' one scoring step: contract, features, model. Local and Spark run this.

    A row whose window value cannot be read as a time is rejected too (it belongs to no window). `history`: the
    feature table's rows for the window (a spec with history features), attached to the valid rows."""
    chunk = chunk.reset_index(drop=True)
    spec = scorer.spec
    result = contract.validate(chunk, serving=True)
    valid, key, rejects = result.valid, spec.key, result.rejects
    unreadable = _unreadable_window(chunk, spec.source.window_column, rejects)
    if len(unreadable):
        rejects = pd.concat([rejects, unreadable], ignore_index=True).sort_values(["row", "field"], kind="stable")
        valid = valid.drop(index=unreadable["row"].unique(), errors="ignore")
    if history is not None:
        valid = store.attach(spec, valid, history)
    predictions = scorer.predict(valid) if len(valid) else []
    scored = chunk.loc[valid.index, key].reset_index(drop=True)
    scored["event_time"] = spec.event_time(valid).to_numpy(dtype="datetime64[us]")
    scored["prediction"] = np.asarray(predictions, dtype="float64")
    positions = rejects["row"].to_numpy(dtype="int64")
    rejects = rejects[[*key, "field", "value", "rule"]].astype(
        {k: str for k in key} | {"field": str, "value": str, "rule": str}
    )
    return ScoredChunk(scored, rejects.reset_index(drop=True), len(set(positions)), valid, positions)


@dataclass(frozen=True)
class Scoring:
    """What scores a chunk, in the batch's own process or in a scoring process: the model, its contract and the
    challenger scoring in shadow (if any)."""

    scorer: Scorer
    contract: Contract
    shadow: Scorer | None = None


@dataclass(frozen=True)
class RowsScored:
    """One chunk scored: what its write needs, and nothing of the chunk itself (it crosses between processes)."""

    predictions: pd.DataFrame  # key columns, event_time, prediction
    rejects: pd.DataFrame  # key columns (as text), field, value, rule, row_hash
    rejected_rows: int
    shadowed: np.ndarray | None  # the challenger's predictions of the same rows
    latest: object  # the latest readable window value among the chunk's rows


def score_rows(scoring: Scoring, chunk: pd.DataFrame, history: pd.DataFrame | None = None) -> RowsScored:
    """`score_chunk`, the challenger's predictions and what the chunk's write records of its rows."""
    chunk = chunk.reset_index(drop=True)
    scored = score_chunk(scoring.scorer, scoring.contract, chunk, history)
    rejects = scored.rejects.assign(row_hash=_row_hashes(chunk.iloc[scored.reject_positions]))
    shadowed = None
    if scoring.shadow is not None and len(scored.valid):
        shadowed = scoring.shadow.predict(scored.valid)
    latest = _latest(scoring.scorer.spec.source.window_column, chunk, scored)
    return RowsScored(scored.predictions, rejects, scored.rejected_rows, shadowed, latest)


def _latest(column: str, chunk: pd.DataFrame, scored: ScoredChunk) -> object:
    """The latest readable window value among the chunk's rows (all of them are scored or rejected)."""
    unreadable = set(scored.reject_positions[(scored.rejects["rule"] == WINDOW_UNREADABLE).to_numpy()])
    values = chunk[column].drop(index=list(unreadable), errors="ignore").drop_duplicates()
    moments = _moments(values)
    return None if moments.isna().all() else values.iloc[int(np.nanargmax(moments.to_numpy(dtype="float64")))]


def _unreadable_window(chunk: pd.DataFrame, column: str, rejects: pd.DataFrame) -> pd.DataFrame:
    """Problems for rows whose window value is no time at all (unless the contract already named that field)."""
    if column not in chunk.columns or pd.api.types.is_datetime64_any_dtype(chunk[column]):
        return pd.DataFrame(columns=rejects.columns)
    raw = chunk[column]
    distinct = raw.drop_duplicates()  # hours of a day repeat its date: judge each distinct value once
    unreadable = distinct[_moments(distinct).isna().to_numpy()]
    bad = raw.isin(unreadable) | raw.isna()
    known = set(rejects.loc[rejects["field"] == column, "row"])
    rows = [row for row in np.flatnonzero(bad.to_numpy()) if row not in known]
    if not rows:
        return pd.DataFrame(columns=rejects.columns)
    problems = chunk.loc[rows, [k for k in rejects.columns if k in chunk.columns and k not in ("field", "value")]]
    problems = problems.map(shown).reset_index(names="row")
    return problems.assign(field=column, value=raw.loc[rows].map(shown).to_numpy(), rule=WINDOW_UNREADABLE)


def _moments(values: pd.Series) -> pd.Series:
    """Window values as times (NaT where a value is no time: text that is no ISO date, a number, bytes). Values
    with an offset are read in UTC, so that a column mixing offsets (a clock changing) still orders."""
    if pd.api.types.is_datetime64_any_dtype(values):
        return values
    moments = pd.to_datetime(values.map(_moment_or_none), errors="coerce", format="ISO8601", utc=True)
    return moments.dt.tz_localize(None)


def _is_moment(value: object) -> bool:
    return isinstance(value, datetime | pd.Timestamp | np.datetime64) and not pd.isna(value)


@dataclass
class RunSummary:
    run_id: str
    model: str
    window_start: str
    window_end: str
    status: str = RUNNING
    rows_read: int = 0  # committed: rows scored or rejected by this run
    rows_scored: int = 0
    rows_rejected: int = 0
    rows_skipped: int = 0  # rows rejected before and unchanged since: not taken up again
    duration_s: float = 0.0
    error: str | None = None
    latest: object = field(default=None, repr=False)  # the latest window value committed (for the watermark)
    chunks: int = field(default=0, repr=False)

    @property
    def exit_code(self) -> int:
        return EXIT_CODES.get(self.status, 1)

    def fail(self, error: BaseException) -> None:
        """Keep the first error: what follows it (a failed rollback, a lost connection) is a consequence."""
        self.status = FAILED
        self.error = self.error or f"{type(error).__name__}: {error}"

    def line(self) -> str:
        skipped = f" ({self.rows_skipped} rejected before, unchanged)" if self.rows_skipped else ""
        return (f"batch {self.status}: {self.rows_scored} scored, {self.rows_rejected} rejected of "
                f"{self.rows_read} read{skipped}, window {self.window_start or '(first)'} .. "
                f"{self.window_end or '(last)'}, model {self.model}, {self.duration_s:.1f} s "
                f"({self.rows_read / max(self.duration_s, 1e-9):,.0f} rows/s), run {self.run_id}")  # fmt: skip


class BatchBusy(Busy):
    """Another run holds the source table."""


class SourceLock(ProcessLock):
    """One batch run at a time per source table (`storage.locks`)."""

    busy, what = BatchBusy, "another batch run is scoring"

    def __init__(self, engine: Engine, table: str) -> None:
        super().__init__(engine, "batch", table)


class BatchJob:
    """One run of batch scoring over a window, with one model."""

    def __init__(self, engine: Engine, scorer: Scorer, tag: str, *, chunk_rows: int = CHUNK_ROWS, prefix: str = "",
                 shadow: tuple[str, Scorer] | None = None, log_predictions: bool = True,
                 retry_rejects: bool = False, threads: int = 1, slice_rows: int | None = None,
                 processes: int = 1):  # fmt: skip
        """`shadow`: a challenger (tag, scorer) that scores the same rows into the same tables.
        `log_predictions`: log every prediction for monitoring (by reference: a role on its row, the inputs
        stay in the source table).
        `retry_rejects`: take up rows rejected before even if unchanged. `threads`: OpenMP threads for the model
        (HistGradientBoosting's default of one per core is slower on a machine that is also reading and writing).
        `slice_rows`: about how many rows of the window a history model scores per time slice (`Slice`); by
        default about `SLICE_ROWS`, a little under a whole number of chunks (`default_slice_rows`).
        `processes`: scoring processes (`jobs.processes`; 1: this process scores); each runs the model on one
        OpenMP thread, so more than one process and more than one thread do not go together."""
        if slice_rows is None:
            slice_rows = default_slice_rows(max(1, chunk_rows))
        if chunk_rows < 1 or slice_rows < 1:
            raise ValueError(f"chunk_rows and slice_rows must be at least 1, not {chunk_rows} and {slice_rows}")
        if threads < 1 or processes < 1:
            raise ValueError(f"threads and processes must be at least 1, not {threads} and {processes}")
        if threads > 1 and processes > 1:
            raise ValueError(f"{processes} scoring processes run the model on one thread each, not {threads}: "
                             "ask for processes or for threads")  # fmt: skip
        if processes > 1 and not can_fork():
            log.warning("no fork on this platform: one process scores, not %d", processes)
            processes = 1
        self.engine = engine
        self.scorer = scorer
        self.spec = scorer.spec
        if shadow is not None and (unread := shadow[1].spec.history_not_in(self.spec)):
            raise ValueError(
                f"the challenger {shadow[0]} reads history features the champion {tag} does not "
                f"({', '.join(unread)}): score it in a run of its own (`tiffin batch --model {shadow[0]}`)"
            )
        self.tag = tag
        self.chunk_rows = chunk_rows
        self.slice_rows = slice_rows
        self.shadow = shadow
        self.retry_rejects = retry_rejects
        self.threads = threads
        self.processes = processes
        self.scoring = Scoring(scorer, Contract(self.spec), shadow[1] if shadow else None)
        self.source = source_table(engine, self.spec)
        self.tables = batch_tables(engine, self.spec, self.source, prefix)
        self.log_predictions = log_predictions
        self.rejected: dict[str, str | None] = {}  # key text -> row hash of the rows this model rejected
        self._reader: tuple[int, BulkConnection, Callable] | None = None  # `_feature_reader`

    # -- the window ----------------------------------------------------------------------------

    def watermark(self) -> str | None:
        marks = self.tables.watermarks
        with self.engine.connect() as connection:
            return connection.execute(
                sa.select(marks.c.window_end).where(
                    marks.c.source == self.source.name, marks.c.model_name == self.tag.split(":")[0]
                )
            ).scalar_one_or_none()

    def _columns(self) -> list[sa.Column]:
        """What a chunk holds of each row: its key, the model's inputs and the window column."""
        column = self.source.c[self.spec.source.window_column]
        wanted = [self.source.c[n] for n in self.spec.input_columns if n in self.source.c]
        keys = [self.source.c[k] for k in self.spec.key]
        return list(dict.fromkeys([*keys, *wanted, column]))

    def _unscored(self, window: Window, part: Slice | None = None) -> list[sa.ColumnElement]:
        """The conditions of the rows to score: in the window (and in the slice `part`), not scored by this model (a
        slice of a window none of whose rows it had scored when the run began needs no anti-join: `Slice.fresh`)."""
        predictions = self.tables.predictions
        already = sa.exists().where(
            *[predictions.c[k] == self.source.c[k] for k in self.spec.key], predictions.c.model == self.tag
        )
        column = self.source.c[self.spec.source.window_column]
        within = [] if part is None else [column.is_(None)] if part.undated else part.holds.conditions(column)
        return [*window.conditions(column), *within, *([] if part is not None and part.fresh else [~already])]

    def _selection(self, window: Window, part: Slice | None = None) -> sa.Select:
        return sa.select(*self._columns()).where(*self._unscored(window, part))

    def chunks(self, bulk: BulkConnection, window: Window, part: Slice | None = None) -> Iterator[pd.DataFrame]:
        """Rows of the window (and of the slice `part`) not yet scored by this model, `chunk_rows` at a time, where
        no materializing read hands them over (`slice_features`): a row-only model's window, a slice of window
        values that are no time, the rows with none.

        By keyset pagination with the last position as a bound value: in key order on PostgreSQL; in rowid order
        on SQLite, whose key columns may hold values of any type (a rowid is always an integer, so no key value
        can stall or skip the pagination). A read that comes back short is the last: one more, empty, read would
        on SQLite walk the slice again."""
        sqlite = self.engine.dialect.name == "sqlite"
        position = ([sa.literal_column(f'"{self.source.name}".rowid', sa.Integer)] if sqlite
                    else [self.source.c[k] for k in self.spec.key])  # fmt: skip
        labels = ["_position"] if sqlite else self.spec.key
        selection = self._selection(window, part).order_by(*position).limit(self.chunk_rows)
        if sqlite:
            selection = selection.add_columns(position[0].label("_position"))
        last = None
        while True:
            query = selection if last is None else selection.where(sa.tuple_(*position) > sa.tuple_(*last))
            chunk = bulk.read_exact(query, keep=labels if sqlite else ())
            if chunk.empty:
                return
            last = [_python(v) for v in chunk[labels].iloc[-1]]
            yield chunk.drop(columns=["_position"]) if sqlite else chunk
            if len(chunk) < self.chunk_rows:
                return

    # -- one chunk -------------------------------------------------------------------------------

    def take_up(self, chunk: pd.DataFrame) -> TakenUp:
        """The chunk's rows to score: rows this model rejected before and unchanged since are skipped (unless
        `retry_rejects`); the earlier problems of those taken up again are deleted with the chunk's write."""
        chunk = chunk.reset_index(drop=True)
        keys = _key_texts(chunk, self.spec.key) if self.rejected else None
        skipped = 0
        if keys is not None and not self.retry_rejects:
            unchanged = self._unchanged_rejects(chunk, keys)
            skipped = int(unchanged.sum())
            chunk, keys = chunk[~unchanged].reset_index(drop=True), keys[~unchanged].reset_index(drop=True)
        # Rows rejected before that changed since: their old problems go, whatever becomes of them now.
        again = chunk.loc[keys.isin(self.rejected).to_numpy()] if keys is not None else chunk.iloc[:0]
        return TakenUp(chunk, skipped, again[self.spec.key].reset_index(drop=True))

    def chunk_write(self, done: ChunkScored, run_id: str, now: object) -> ChunkWrite:
        """Everything one chunk writes, in one transaction."""
        scored = done.scored
        same = {"run_id": run_id, "model": self.tag}
        logged = self.log_predictions
        writes = [
            (self.tables.predictions, _arrow(scored.predictions),
             {**same, "scored_at": now, "role": predlog.CHAMPION if logged else None}),
            (self.tables.rejects, _arrow(scored.rejects), {**same, "rejected_at": now}),
        ]  # fmt: skip
        if self.shadow is not None and scored.shadowed is not None:
            writes.append((self.tables.predictions, _arrow(scored.predictions.assign(prediction=scored.shadowed)),
                           {**same, "model": self.shadow[0], "scored_at": now,
                            "role": predlog.CHALLENGER if logged else None}))  # fmt: skip
        return ChunkWrite(writes, self._forget(done.again), done.rows, len(scored.predictions), scored.rejected_rows,
                          done.skipped, scored.latest)  # fmt: skip

    def _unchanged_rejects(self, chunk: pd.DataFrame, keys: pd.Series) -> np.ndarray:
        """Rows this model rejected before whose source row is still the same."""
        candidates = np.flatnonzero(keys.isin(self.rejected).to_numpy())
        unchanged = np.zeros(len(chunk), dtype=bool)
        if len(candidates):
            hashes = _row_hashes(chunk.iloc[candidates])
            unchanged[candidates] = [self.rejected[keys.iat[i]] == h for i, h in zip(candidates, hashes, strict=True)]
        return unchanged

    def _forget(self, rows: pd.DataFrame) -> list[sa.Delete]:
        """Deletes of this model's earlier problems with these rows (a few hundred keys a statement)."""
        rejects, key = self.tables.rejects, self.spec.key
        texts = rows[key].map(shown).to_numpy().tolist() if len(rows) else []
        return [
            rejects.delete().where(
                rejects.c.model == self.tag,
                sa.or_(*[sa.and_(*[rejects.c[k] == v for k, v in zip(key, values, strict=True)]) for values in part]),
            )
            for part in (texts[i : i + 200] for i in range(0, len(texts), 200))
        ]

    # -- the run ---------------------------------------------------------------------------------

    def run(self, start: str | None = None, end: str | None = None, since_last: bool = False) -> RunSummary:
        """Score the window; raises WindowError for a bad window and BatchBusy when another run holds the source."""
        window = Window.parse(start, end)
        with SourceLock(self.engine, self.source.name), threadpool_limits(self.threads, user_api="openmp"):
            self._abandon_dead_runs()
            if since_last and (mark := self.watermark()):
                # Inclusive: the watermark's own time may have received rows since (they are not scored yet).
                start = mark if window.start is None or Window.parse(mark, None).start > window.start else start
                window = Window.parse(start, end)
            return self._run(window, start or "", end or "")

    def slices(self, window: Window, start: str | None, end: str | None) -> tuple[list[Slice], int | None]:
        """The window in time slices of about `slice_rows` unscored rows, and how many there are (None: not
        counted). A row-only model scores the whole window in one; a history model with nothing to score has no
        slice, so that its re-run costs one query.

        Slices cut the window column at whole days, from the first unscored day: together they hold every row of
        the window exactly once (rows with no window value, when the window is open both ways, in one slice of their
        own, last). Where slicing by time cannot place every row, the run is one slice: a window value that is no
        time, or one whose text sorts below its own day (' 2011-01-10'), which no slice's read by days would hold.
        A slice's features are materialized over its days and one more each side (event times in
        another zone than the window column's), not over the window: a run after an hour of new rows computes that
        day's."""
        if self.spec.history is None:
            return [Slice(start, end)], None
        rows, undated, first, last, in_window = self._extent(window)
        lower, upper = _day(first), _day(last)
        if not rows:
            return [], 0
        if lower is None or upper is None:  # a window value that is no time: slicing by time cannot place it
            return [Slice(start, end)], rows
        fresh = in_window == rows
        days = (upper - lower).days + 1
        dated = rows - undated  # what the slices by day hold
        step = max(1, days * self.slice_rows // dated)  # days rounded down: on average a slice stays under `slice_rows`
        cuts = [lower + timedelta(days=d) for d in range(step, days, step)]
        found = []
        for i, day in enumerate([lower, *cuts]):
            after = cuts[i] if i < len(cuts) else None
            held = Window(start=_midnight(day) if i else None,
                          end=_midnight(after - timedelta(days=1)) if after else None, end_is_day=True)  # fmt: skip
            margin = (day - timedelta(days=1)).isoformat()
            found.append(Slice(margin, after.isoformat() if after is not None else end, held, planned=True,
                               fresh=fresh))  # fmt: skip
        if window.start is None and self._below_first_read(window, found[0]):
            return [Slice(start, end)], rows
        if undated:  # counted only in a window open both ways: a bound leaves out a null window value
            found.append(Slice(None, None, undated=True))
        return found, rows

    def _below_first_read(self, window: Window, first: Slice) -> bool:
        """Whether a row of the first slice sorts below what the read that materializes it takes. The first slice
        holds every row before its end, and its read starts its lookback before the first value's day: a text that
        sorts below that day (' 2011-01-10') would be in no read. Later slices, and a window with a start, are
        bounded like their reads (one query, cheap by the window column's index)."""
        column = self.source.c[self.spec.source.window_column]
        read = Window.parse(store.read_from(self.spec, first.start), None).conditions(column)
        below = sa.exists().where(*self._unscored(window, first), ~sa.and_(*read))
        with self.engine.connect() as connection:
            return bool(connection.execute(sa.select(below)).scalar())

    def _extent(self, window: Window) -> tuple[int, int, object, object, int]:
        """How many rows of the window this model has not scored, how many of them have no window value, the first
        and last window values (one pass over the window: the slices' plan, or a progress bar's total), and how
        many rows the window holds, scored or not, if any is unscored (by the window column's index; in the same
        statement, so that both counts see the same rows)."""
        name = self.spec.source.window_column
        unscored = self._selection(window).subquery()
        column = unscored.c[name]
        every = sa.select(sa.func.count()).select_from(self.source).where(*window.conditions(self.source.c[name]))
        # Counted only if a row is unscored: a re-run with nothing new skips it.
        held = sa.case((sa.func.count() > 0, every.scalar_subquery().correlate(None)), else_=0)
        counts = [sa.func.count(), sa.func.count(column), sa.func.min(column), sa.func.max(column), held]
        with self.engine.connect() as connection:
            rows, valued, first, last, in_window = connection.execute(sa.select(*counts)).one()
        return rows, rows - valued, first, last, in_window

    def slice_features(self, window: Window, part: Slice) -> SliceFeatures:
        """For a spec with history features: materialize the slice's (writing new or changed points only); they
        come by key, what its chunks are scored with. A planned slice's rows to score come from the same read.
        Rows with no window value have no time, so no features. In the batch process on SQLite, only while its
        bulk connections are closed (ADBC's SQLite and Python's must not have the file open at once in one
        process)."""
        if part.undated:
            return SliceFeatures(0, 0, store.by_key(self.spec, store.no_rows(self.spec)), None)
        chosen = sa.and_(sa.true(), *self._unscored(window, part))  # true: a fresh slice of an open window has none
        pick = store.Pick(self.source, chosen, [c.name for c in self._columns()])
        done = store.materialize(self.engine, self.spec, part.start, part.end, contract=self.scoring.contract,
                                 reader=self._feature_reader(), pick=pick if part.planned else None)  # fmt: skip
        return SliceFeatures(done.points, done.written, store.by_key(self.spec, done.rows), done.picked)

    def _feature_reader(self) -> BulkConnection | None:
        """The connection this process reads the slices it materializes through: opened at its first slice and kept
        for the others where one may stay open (on PostgreSQL, opening one costs ~30 ms, twice a slice: a tenth
        of a run); None on SQLite, where each read opens its own. Closed when the run ends in the batch process
        (`_close_feature_reader`), and when a scoring process ends (multiprocessing's finalizers run at its exit)."""
        if not BulkConnection.may_stay_open(self.engine):
            return None
        if self._reader is None or self._reader[0] != os.getpid():  # a forked process never uses its parent's
            reader = BulkConnection(self.engine)
            self._reader = (os.getpid(), reader, multiprocessing.util.Finalize(reader, reader.close, exitpriority=0))
        return self._reader[1]

    def _close_feature_reader(self) -> None:
        if self._reader is not None and self._reader[0] == os.getpid():
            self._reader[2]()  # closes it, once
        self._reader = None

    def _run(self, window: Window, start: str, end: str) -> RunSummary:
        began = time.perf_counter()
        summary = RunSummary(str(uuid.uuid4()), self.tag, start, end)
        self._record_start(summary)
        self.rejected = self._rejected_before()
        if self.engine.dialect.name == "sqlite":  # a reader and a writer at once need the WAL journal
            with self.engine.connect() as connection:
                connection.exec_driver_sql("PRAGMA journal_mode=WAL")
        try:
            parts, total = self.slices(window, start or None, end or None)
            # The count is a second pass over the window: only worth it for a progress bar on a terminal
            # (tqdm's disable=None hides the bar elsewhere: cron, CI, logs); a history model's slices know it.
            if total is None and sys.stderr.isatty():
                total = self._extent(window)[0]
            with self._scoring_processes(bool(parts)) as processes, \
                    tqdm(total=total, desc="batch", unit="row", disable=None) as progress:  # fmt: skip
                self._score_slices(window, parts, summary, progress, processes)
            summary.status = PARTIAL if summary.rows_rejected else SUCCESS
        except Exception as error:
            summary.fail(error)
            raise
        finally:
            self._close_feature_reader()
            summary.duration_s = round(time.perf_counter() - began, 3)
            if not end and summary.latest is not None:
                summary.window_end = _iso(summary.latest)
            self._record_end(summary)
        return summary

    def _scoring_processes(self, needed: bool) -> contextlib.AbstractContextManager[ScoringProcesses | None]:
        """The run's scoring processes (None: this process scores), forked before its first thread starts."""
        if self.processes == 1 or not needed:
            return contextlib.nullcontext()
        self.engine.dispose()  # the pool's connections closed here, so that no process inherits them
        return ScoringProcesses(self, self.processes)

    def _slice_features(self, window: Window, parts: list[Slice]) -> Iterator[SliceFeatures | None]:
        """Each slice's history features (None without history), materialized here, in turn, when asked for."""
        for part in parts:
            if self.spec.history is None:
                yield None
                continue
            found = self.slice_features(window, part)
            self._log_materialized(part, found.points, found.written)
            yield found
            del found  # the slice's memory goes once its chunks are handed on, before the next is materialized

    def _log_materialized(self, part: Slice, points: int, written: int) -> None:
        if not part.undated:
            log.info("%s: %d points, %d written (%s .. %s)", store.table_name(self.spec), points, written,
                     part.start or "(first)", part.end or "(last)")  # fmt: skip

    def score_slice(self, window: Window, part: Slice) -> SliceScored:
        """A history model's planned slice materialized, taken up and scored chunk by chunk in one process (a scoring
        process): its rows and features stay where they are read, and only what each chunk's write needs crosses
        back to the batch process."""
        if not part.planned:
            raise ValueError("only a slice planned at whole days is scored whole: its rows come from one read")
        found = self.slice_features(window, part)
        done = [self.score_taken(self.take_up(chunk), found.by_key) for chunk in self._cut(found.to_score)]
        return SliceScored(found.points, found.written, done)

    def _cut(self, rows: pd.DataFrame) -> Iterator[pd.DataFrame]:
        for first in range(0, len(rows), self.chunk_rows):
            yield rows.iloc[first : first + self.chunk_rows].reset_index(drop=True)

    def _score_slices(self, window: Window, parts: list[Slice], summary: RunSummary, progress: tqdm,
                      processes: ScoringProcesses | None) -> None:  # fmt: skip
        """With scoring processes, a history model's slices are each scored whole in one of them
        (`_score_slices_apart`); otherwise the slices' chunks are read, scored and written through one pipeline from
        the first slice to the last (its bulk connections open throughout, never drained at a slice's end) where the
        batch process never materializes (a row-only model) or may while its bulk connections are open (PostgreSQL:
        each slice is then materialized on the reading thread, as the pipeline asks for its chunks); on SQLite
        without scoring processes, a pipeline a slice, each slice materialized here while none is open."""
        if processes is not None and self.spec.history is not None:
            # Planned slices each whole in a scoring process; what follows them (rows with no window value), or a run
            # of one slice that is not planned (as many rows as the window), in chunks spread over the processes.
            planned, rest = [p for p in parts if p.planned], [p for p in parts if not p.planned]
            if planned:
                self._score_slices_apart(window, planned, summary, progress, processes)
            self._score_each_slice(window, rest, summary, progress, processes)
        elif processes is not None or BulkConnection.may_stay_open(self.engine):
            features = self._slice_features(window, parts)
            self._score_chunks(partial(self._slice_chunks, window, parts, features), summary, progress, processes)
        else:
            self._score_each_slice(window, parts, summary, progress, None)

    def _score_each_slice(self, window: Window, parts: list[Slice], summary: RunSummary, progress: tqdm,
                          processes: ScoringProcesses | None) -> None:  # fmt: skip
        """A pipeline a slice, each slice materialized here before its pipeline opens its bulk connections."""
        for part, found in zip(parts, self._slice_features(window, parts), strict=True):
            self._score_chunks(partial(self._slice_chunks, window, [part], iter([found])), summary, progress, processes)

    def _score_slices_apart(self, window: Window, parts: list[Slice], summary: RunSummary, progress: tqdm,
                            processes: ScoringProcesses) -> None:  # fmt: skip
        """Each slice scored whole in a scoring process (`score_slice`), one more slice under way than there are
        processes, and its chunks written here in order, each in its own transaction on the I/O thread. Before,
        a slice's rows and features crossed from the process that materialized them to this one, and its chunks
        back to be scored: pickling them was a tenth of a run's work. Each process's copy of SQLite is its own
        (`database.engine_for`), and this process holds nothing but its writer."""
        writer = BulkConnection(self.engine)
        try:
            with ThreadPoolExecutor(max_workers=1, thread_name_prefix="batch-io") as io:
                under_way: deque[tuple[Slice, Future]] = deque()
                writing = None
                for part in [*parts, None]:
                    if part is not None:
                        under_way.append((part, processes.submit(_slice_scored, window, part)))
                    while under_way and (part is None or len(under_way) > self.processes):
                        done_part, scoring = under_way.popleft()
                        done = scoring.result()
                        self._log_materialized(done_part, done.points, done.written)
                        for chunk in done.chunks:
                            writing = self._write_in_turn(io, writing, writer, chunk, summary, progress)
                if writing is not None:
                    writing.result()
        finally:
            writer.close()
            _trim_heap()

    def _slice_chunks(self, window: Window, parts: list[Slice], features: Iterator[SliceFeatures | None],
                      reader: BulkConnection) -> Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]:  # fmt: skip
        """Each slice's chunks with the slice's features: cut from the rows its materializing read handed over, or
        read here; a slice's memory is given back once its chunks are handed on."""
        for part, found in zip(parts, features, strict=True):
            history = None if found is None else found.by_key
            if found is not None and found.to_score is not None:
                chunks = self._cut(found.to_score)
            else:
                chunks = self.chunks(reader, window, part)
            yield from ((chunk, history) for chunk in chunks)
            del found, history, chunks  # before the next slice is materialized
            _trim_heap()

    def _score_chunks(self, chunks_of: Callable[[BulkConnection], Iterator[tuple[pd.DataFrame, pd.DataFrame | None]]],
                      summary: RunSummary, progress: tqdm, processes: ScoringProcesses | None) -> None:  # fmt: skip
        # From here until they close, only the bulk connections touch the database in this process (db.engine_for).
        bulk: list[BulkConnection] = []
        try:
            bulk = [BulkConnection(self.engine), BulkConnection(self.engine)]
            self._pipeline(chunks_of(bulk[0]), bulk[1], summary, progress, processes)
        finally:
            for connection in bulk:
                connection.close()
            _trim_heap()

    def _pipeline(self, chunks: Iterator[tuple[pd.DataFrame, pd.DataFrame | None]], writer: BulkConnection,
                  summary: RunSummary, progress: tqdm, processes: ScoringProcesses | None) -> None:  # fmt: skip
        """Read chunk k+1 and write chunk k-1 while chunk k is scored (the drivers release the GIL); with scoring
        processes, one chunk more than there are processes is being scored meanwhile.

        Writes stay in order, one transaction per chunk; a failed write stops the run.
        """
        scoring: deque[Future] = deque()
        depth = 1 + (self.processes if processes is not None else 0)
        with ThreadPoolExecutor(max_workers=2, thread_name_prefix="batch-io") as io:
            upcoming = io.submit(next, chunks, None)
            writing = None
            while (read := upcoming.result()) is not None:
                upcoming = io.submit(next, chunks, None)
                scoring.append(self._score_soon(*read, processes))
                while len(scoring) >= depth:
                    writing = self._write_in_turn(io, writing, writer, scoring.popleft().result(), summary, progress)
            while scoring:
                writing = self._write_in_turn(io, writing, writer, scoring.popleft().result(), summary, progress)
            if writing is not None:
                writing.result()

    def _score_soon(self, chunk: pd.DataFrame, history: pd.DataFrame | None, processes: ScoringProcesses | None
                    ) -> Future:  # fmt: skip
        """The chunk's rows taken up and scored: here and now, or under way in a scoring process."""
        taken = self.take_up(chunk)
        if processes is not None:
            return processes.submit(_scored, taken, history)
        done: Future = Future()
        done.set_result(self.score_taken(taken, history))
        return done

    def score_taken(self, taken: TakenUp, history: pd.DataFrame | None) -> ChunkScored:
        """A chunk's rows taken up, scored: what its write needs."""
        return taken.scored(score_rows(self.scoring, taken.chunk, history))

    def _write_in_turn(self, io: ThreadPoolExecutor, writing: Future | None, bulk: BulkConnection, done: ChunkScored,
                       summary: RunSummary, progress: tqdm) -> Future:  # fmt: skip
        """Once the one before it is written, write the chunk scored (one transaction) on the I/O thread. The run's
        counters move when the chunk commits, so they always equal what the tables hold."""
        chunk_write = self.chunk_write(done, summary.run_id, _timestamp(self.engine))
        runs = self.tables.runs

        def write() -> None:
            counts = {"rows_read": summary.rows_read + chunk_write.rows,
                      "rows_scored": summary.rows_scored + chunk_write.scored,
                      "rows_rejected": summary.rows_rejected + chunk_write.rejected}  # fmt: skip
            moved = runs.update().where(runs.c.run_id == summary.run_id).values(**counts)
            bulk.write(chunk_write.writes, [moved], before=chunk_write.before, new_keys=[self.tables.predictions])
            summary.rows_read, summary.rows_scored, summary.rows_rejected = counts.values()
            summary.rows_skipped += chunk_write.skipped
            summary.chunks += 1
            summary.latest = _later(summary.latest, chunk_write.latest)
            log.info(json.dumps({"event": "chunk", "run_id": summary.run_id, "chunk": summary.chunks,
                                 "rows": chunk_write.rows, "scored": chunk_write.scored,
                                 "rejected": chunk_write.rejected, "skipped": chunk_write.skipped}))  # fmt: skip

        if writing is not None:
            writing.result()
        progress.update(chunk_write.rows + chunk_write.skipped)
        return io.submit(write)

    # -- the ledger ------------------------------------------------------------------------------

    def _rejected_before(self) -> dict[str, str | None]:
        rejects = self.tables.rejects
        columns = [rejects.c[k] for k in self.spec.key]
        with self.engine.connect() as connection:
            rows = connection.execute(
                sa.select(*columns, rejects.c.row_hash).where(rejects.c.model == self.tag).distinct()
            ).all()
        return {"\x1f".join(row[:-1]): row[-1] for row in rows}

    def _abandon_dead_runs(self) -> None:
        """Runs left `running` on this source while nobody holds its lock: their process is gone."""
        runs = self.tables.runs
        with self.engine.begin() as connection:
            connection.execute(
                runs.update()
                .where(runs.c.source == self.source.name, runs.c.status == RUNNING)
                .values(status=ABANDONED, error=sa.func.coalesce(runs.c.error, DIED), finished_at=utcnow())
            )

    def _record_start(self, summary: RunSummary) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.tables.runs.insert().values(
                run_id=summary.run_id, source=self.source.name, model=self.tag, window_start=summary.window_start,
                window_end=summary.window_end, started_at=utcnow(), status=RUNNING,
                rows_read=0, rows_scored=0, rows_rejected=0,
            ))  # fmt: skip

    def _record_end(self, summary: RunSummary) -> None:
        """The run's outcome, on a fresh connection (the pooled one may have died with the run). If even that
        fails, the next run marks this one abandoned."""
        self.engine.dispose()
        runs = self.tables.runs
        try:
            with self.engine.begin() as connection:
                connection.execute(runs.update().where(runs.c.run_id == summary.run_id).values(
                    finished_at=utcnow(), duration_s=summary.duration_s, status=summary.status, error=summary.error,
                    window_end=summary.window_end, rows_read=summary.rows_read, rows_scored=summary.rows_scored,
                    rows_rejected=summary.rows_rejected,
                ))  # fmt: skip
                if summary.status in (SUCCESS, PARTIAL) and summary.latest is not None:
                    self._advance_watermark(connection, summary.latest)
        except Exception:
            log.exception("batch run %s: its outcome (%s) could not be recorded", summary.run_id, summary.status)

    def _advance_watermark(self, connection: sa.Connection, latest: object) -> None:
        """Forward only: a back-fill of older rows leaves the watermark where it was."""
        marks = self.tables.watermarks
        key = {"source": self.source.name, "model_name": self.tag.split(":")[0]}
        where = [marks.c.source == key["source"], marks.c.model_name == key["model_name"]]
        current = connection.execute(sa.select(marks.c.window_end).where(*where)).scalar_one_or_none()
        if current is not None and _later(current, latest) is current:
            return
        connection.execute(marks.delete().where(*where))
        connection.execute(marks.insert().values(**key, window_end=_iso(latest), updated_at=utcnow()))


def _scored(job: BatchJob, taken: TakenUp, history: pd.DataFrame | None) -> ChunkScored:
    """A chunk scored in a scoring process (`ScoringProcesses` holds the job: its model is not sent)."""
    return job.score_taken(taken, history)


def _slice_scored(job: BatchJob, window: Window, part: Slice) -> SliceScored:
    """A slice scored in a scoring process (`BatchJob.score_slice`), on connections of its own (its engine's pool
    was emptied before the fork); the memory it took is given back before its next task."""
    try:
        return job.score_slice(window, part)
    finally:
        job.engine.dispose()
        _trim_heap()


@dataclass(frozen=True)
class Slice:
    """A part of the window scored with its own features: `start`..`end` (ISO, `end` inclusive) is what is
    materialized for it, `holds` which of the window's rows it holds, by their window value. Plain values: it crosses
    to the scoring process that materializes it."""

    start: str | None
    end: str | None
    holds: Window = field(default_factory=Window)
    # Cut at whole days to about `slice_rows`: its rows come from the read that materializes its features.
    planned: bool = False
    # No row of the window was scored by this model when the run began, so none of the slice's is: the read that
    # picks its rows needs no anti-join (the run holds the source's lock: no other run scores them meanwhile). On
    # PostgreSQL, the anti-join as a column of that read is a subplan, an index probe a row: half the read's work.
    fresh: bool = False
    undated: bool = False  # the rows with no window value instead (no time: no features)


@dataclass(frozen=True)
class SliceFeatures:
    """A slice's history features, materialized: how many points, how many written (new or changed), and the rows
    by key; for a planned slice, its rows to score too, from the same read."""

    points: int
    written: int
    by_key: pd.DataFrame
    to_score: pd.DataFrame | None = None  # a planned slice's unscored rows, from the read that materialized it


@dataclass(frozen=True)
class TakenUp:
    """A chunk's rows to score (rows rejected before and unchanged since left out)."""

    chunk: pd.DataFrame
    skipped: int
    again: pd.DataFrame  # the keys of rows rejected before and changed since: their write deletes those problems

    def scored(self, scored: RowsScored) -> ChunkScored:
        return ChunkScored(len(self.chunk), self.skipped, self.again, scored)


@dataclass(frozen=True)
class ChunkScored:
    """A chunk taken up and scored: what its write needs, and none of its rows (it crosses between processes)."""

    rows: int  # taken up
    skipped: int
    again: pd.DataFrame
    scored: RowsScored


@dataclass(frozen=True)
class SliceScored:
    """A slice scored whole in a scoring process: its features' counts and its chunks, in order."""

    points: int
    written: int
    chunks: list[ChunkScored]


@dataclass(frozen=True)
class ChunkWrite:
    """What one chunk writes, and its counts."""

    writes: list[tuple[sa.Table, pa.Table, dict]]
    before: list[sa.Delete]  # earlier problems of rows taken up again
    rows: int
    scored: int
    rejected: int
    skipped: int
    latest: object


def _key_texts(frame: pd.DataFrame, key: list[str]) -> pd.Series:
    """Each row's key as one text, as the rejects table holds it (each key column as text)."""
    texts = frame[key[0]].map(shown)
    for name in key[1:]:
        texts = texts + "\x1f" + frame[name].map(shown)
    return texts.reset_index(drop=True)


def _row_hashes(rows: pd.DataFrame) -> list[str]:
    """A fingerprint of each raw row, the same whichever way a driver typed its values (7, 7.0, '7')."""
    return [hashlib.sha1("\x1f".join(map(_value_text, row)).encode()).hexdigest()
            for row in rows.itertuples(index=False, name=None)]  # fmt: skip


def _value_text(value: object) -> str:
    """One value as text for the row's fingerprint: numbers by value (7, 7.0 and '7' alike), NULL and NaN alike."""
    if value is None or value is pd.NaT or (isinstance(value, float | np.floating) and np.isnan(value)):
        return "\0"
    if isinstance(value, bool | np.bool_ | bytes | bytearray | memoryview):
        return shown(value)
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, str):
        try:
            return str(int(value))
        except ValueError:
            try:
                value = float(value)
            except ValueError:
                return value
    if isinstance(value, float | np.floating):
        number = float(value)
        return str(int(number)) if np.isfinite(number) and number.is_integer() else repr(number)
    return str(value)


def _moment_or_none(value: object) -> object:
    return value if isinstance(value, str) or _is_moment(value) else None


def _later(first: object, second: object) -> object:
    """The later of two window values (text or moments); None is earlier than anything."""
    if first is None:
        return second
    if second is None:
        return first
    a, b = (
        pd.to_datetime(_moment_or_none(first), errors="coerce"),
        pd.to_datetime(_moment_or_none(second), errors="coerce"),
    )
    if pd.isna(b):
        return first
    return second if pd.isna(a) or b > a else first


def _arrow(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


def _timestamp(engine: Engine) -> object:
    """Now, as the moment columns store it (ISO text on SQLite, like ADBC's own timestamps)."""
    now = utcnow()
    return now.isoformat(timespec="microseconds") if engine.dialect.name == "sqlite" else now


def _iso(value: object) -> str:
    if isinstance(value, pd.Timestamp | datetime):
        return value.isoformat()
    return value.isoformat() if hasattr(value, "isoformat") else str(value)


def _trim_heap() -> None:
    """Give the heap's freed pages back to the system (glibc's malloc_trim, as Dask's workers do): without it a
    window's slices leave their freed memory in the heap and the process grows slice after slice."""
    pa.default_memory_pool().release_unused()  # Arrow's own pool (mimalloc) keeps freed pages too
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _moment_of(value: object) -> datetime | None:
    """A window value as a naive moment (UTC for one with an offset), or None for a value that is no time."""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    if isinstance(value, datetime):
        return value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
    if isinstance(value, date):
        return _midnight(value)
    return None


def _day(value: object) -> date | None:
    moment = _moment_of(value)
    return None if moment is None else moment.date()


def _midnight(day: date) -> datetime:
    return datetime.combine(day, datetime.min.time())


def _python(value: object) -> object:
    return value.item() if isinstance(value, np.generic) else value
