"""The API's history lookup: each worker keeps the recent known rows of every series on the grid, in memory.

A request carries the same record as for a row-only model; its history features are read from this worker's
grid with `HistoryGrid.features`, the computation training and the feature table use, so the values are the
same bits. No network round trip per request: a thread rebuilds the grid from the source database when the
feature table changes (`tiffin features materialize`, which the hourly batch runs), checked every
`refresh_seconds`. The same thread computes, with that function, the features and staleness of every hour of
every series from the grid's start to the last hour that can still be fresh (`Precomputed`): a request for
those hours, the real-time case, is one indexing of that table; other hours are computed from the grid.

Missing or stale history is handled the one way the spec declares (`history.when_stale`): `null` features and a
count of stale rows in the answer and the metrics, or a refusal naming the series (a 400). A point's history is
stale when the last value known for its series before t - horizon is older than `history.stale_after`, or
absent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tiffin.core.spec import DatasetSpec, duration
from tiffin.features import store
from tiffin.features.history import HistoryGrid, series_labels
from tiffin.storage import database

log = logging.getLogger("tiffin.history")


PRECOMPUTED_CELLS = 8_000_000  # at most 64 MiB of float64 per worker; a larger table keeps its latest hours


@dataclass(frozen=True)
class Lookup:
    features: dict[str, np.ndarray]  # fresh arrays: the caller's to change
    stale: np.ndarray  # per row: no value known within `stale_after` before its cut (t - horizon)

    def nulled(self) -> dict[str, np.ndarray]:
        """The features with stale rows null, in place: stale history is no history (the spec's `null` way)."""
        if self.stale.any():
            for values in self.features.values():
                values[self.stale] = np.nan
        return self.features


@dataclass(frozen=True)
class Precomputed:
    """Every series' history features and staleness for the slots [first, first + width): the online table."""

    names: list[str]  # the features, the spec's order
    first: int
    values: np.ndarray  # (series, slots, features)
    stale: np.ndarray  # (series, slots)

    def covers(self, codes: np.ndarray, slots: np.ndarray) -> bool:
        return bool(codes.min() >= 0 and slots.min() >= self.first and slots.max() < self.first + self.stale.shape[1])

    def lookup(self, codes: np.ndarray, slots: np.ndarray) -> Lookup:
        at = slots - self.first
        values = self.values[codes, at]  # a copy: the caller may null stale rows in place
        return Lookup({name: values[:, i] for i, name in enumerate(self.names)}, self.stale[codes, at])


def event_times(spec: DatasetSpec, columns: dict) -> np.ndarray:
    """The event time of validated request columns (datetime64 arrays; an hour column as numbers), as
    `DatasetSpec.event_time` makes it for a frame."""
    moments = np.asarray(columns[spec.timestamp.column], dtype="datetime64[ns]")
    if spec.timestamp.hour:
        hours = np.asarray(columns[spec.timestamp.hour], dtype="float64")
        moments = moments + (hours * 3_600_000_000_000).astype("int64").astype("timedelta64[ns]")
    return moments


class OnlineHistory:
    """This worker's grid of the recent history, and the lookup of a request's features in it."""

    def __init__(self, engine: Engine, spec: DatasetSpec, *, keep: pd.Timedelta, refresh_seconds: float = 10.0,
                 on_refresh: Callable[[float], None] | None = None) -> None:  # fmt: skip
        """`keep`: how much history before the source's latest day the grid holds (at least the features' reach).
        `on_refresh(unix time)`: called after each rebuild (the freshness gauge)."""
        self.engine, self.spec, self.keep = engine, spec, max(keep, store.lookback(spec))
        self.table = store.feature_table(engine, spec)
        self.refresh_seconds = refresh_seconds
        self.on_refresh = on_refresh or (lambda at: None)
        step = duration(spec.history.step)
        self.ahead = int(duration(spec.history.horizon) // step)  # in steps, worked out once
        self.stale_steps = int(duration(spec.history.stale_after) // step)
        self.built: tuple[HistoryGrid, Precomputed] | None = None  # one attribute: a request sees one build whole
        self.version: object = None  # the feature table's latest computed_at when the grid was built
        self._stop = threading.Event()

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the grid if the feature table changed since the last build (or if `force`)."""
        with self.engine.connect() as connection:
            version = connection.execute(sa.select(sa.func.max(self.table.c.computed_at))).scalar()
        if not force and self.built is not None and version == self.version:
            return False
        grid = self._build()
        self.built, self.version = (grid, self._precompute(grid)), version
        self.on_refresh(time.time())
        return True

    def start(self) -> OnlineHistory:
        """Build the grid now, then check for a new materialization every `refresh_seconds` in a thread."""
        self.refresh(force=True)
        threading.Thread(target=self._watch, name="history-refresh", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _watch(self) -> None:
        while not self._stop.wait(self.refresh_seconds):
            try:
                self.refresh()
            except Exception:  # a database away for a while: keep answering from the grid there is
                log.exception("history: the grid could not be refreshed; answering from the last one")

    def _build(self) -> HistoryGrid:
        _, latest = database.window_span(self.engine, self.spec)
        start = None if latest is None else (pd.Timestamp(str(latest)[:10]) - self.keep).strftime("%Y-%m-%d")
        grid = HistoryGrid.from_rows(self.spec, store.known_rows(self.engine, self.spec, start, None))
        grid.known_cells  # noqa: B018 -- the staleness index, built here in the refresh thread, not on a request
        return grid

    def _precompute(self, grid: HistoryGrid) -> Precomputed:
        """The features of every series at every slot up to the last that can be fresh (later ones are all stale),
        from the grid's start or, past `PRECOMPUTED_CELLS`, the latest slots that fit."""
        names = self.spec.history_columns
        series, width = len(grid.series), grid.width
        end = width + self.ahead + self.stale_steps + 1
        first = max(0, end - PRECOMPUTED_CELLS // max(1, series * len(names)))
        codes = np.repeat(np.arange(series), end - first)
        slots = np.tile(np.arange(first, end), series)
        found = self._computed(grid, codes, slots)
        values = np.stack([found.features[name] for name in names], axis=-1).reshape(series, end - first, len(names))
        return Precomputed(names, first, values, found.stale.reshape(series, end - first))

    def _computed(self, grid: HistoryGrid, codes: np.ndarray, slots: np.ndarray) -> Lookup:
        cut = slots - self.ahead
        last = grid.last_known(codes, cut)
        stale = (last < 0) | (cut - last > self.stale_steps)
        return Lookup(grid.features(codes, slots), stale)

    def lookup(self, columns: dict) -> Lookup:
        """The history features of validated request columns (or a canonical frame), and which rows' history is
        stale: from the precomputed table when it holds every row's hour, else computed from the grid."""
        built = self.built
        if built is None:
            rows = len(columns[self.spec.timestamp.column])
            empty = {name: np.full(rows, np.nan) for name in self.spec.history_columns}
            return Lookup(empty, np.ones(rows, dtype=bool))
        grid, table = built
        codes, slots = self._points(grid, columns)
        return table.lookup(codes, slots) if table.covers(codes, slots) else self._computed(grid, codes, slots)

    def computed(self, columns: dict) -> Lookup:
        """The same lookup, always computed from the grid (what the table must equal; for checks and benchmarks)."""
        grid, _ = self.built
        return self._computed(grid, *self._points(grid, columns))

    def in_table(self, columns: dict) -> bool:
        """Whether the precomputed table holds every row's hour (the lookup's fast path)."""
        grid, table = self.built
        return table.covers(*self._points(grid, columns))

    def _points(self, grid: HistoryGrid, columns: dict) -> tuple[np.ndarray, np.ndarray]:
        """Each row's series code and slot on `grid`."""
        times = event_times(self.spec, columns)
        return grid.codes(series_labels(self.spec, columns, len(times))), grid.slots(times)
