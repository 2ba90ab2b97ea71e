"""The API's history lookup: each worker keeps the recent known rows of every series on the grid, in memory.

A request carries the same record as for a row-only model; its history features are read from this worker's
grid with `HistoryGrid.features`, the computation training and the feature table use, so the values are the
same bits. No network round trip per request: a thread rebuilds the grid from the source database when the
feature table changes (`tiffin features materialize`, which the hourly batch runs), checked every
`refresh_seconds`.

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
from tiffin.features.history import HistoryGrid
from tiffin.storage import database

log = logging.getLogger("tiffin.history")


@dataclass(frozen=True)
class Lookup:
    features: dict[str, np.ndarray]
    stale: np.ndarray  # per row: no value known within `stale_after` before its cut (t - horizon)


def event_times(spec: DatasetSpec, columns: dict) -> np.ndarray:
    """The event time of validated request columns (datetime64 arrays; an hour column as numbers), as
    `DatasetSpec.event_time` makes it for a frame."""
    moments = np.asarray(columns[spec.timestamp.column], dtype="datetime64[ns]")
    if spec.timestamp.hour:
        hours = np.asarray(columns[spec.timestamp.hour], dtype="float64")
        moments = moments + (hours * 3_600_000_000_000).astype("int64").astype("timedelta64[ns]")
    return moments


def labels(spec: DatasetSpec, columns: dict) -> np.ndarray:
    """Each request row's series label, as `history.series_labels` makes it for a frame."""
    if not spec.series:
        return np.full(len(next(iter(columns.values()))), "", dtype=object)
    parts = [[str(value) for value in columns[name]] for name in spec.series]
    return np.array(["\x1f".join(values) for values in zip(*parts, strict=True)], dtype=object)


class OnlineHistory:
    """This worker's grid of the recent history, and the lookup of a request's features in it."""

    def __init__(self, engine: Engine, spec: DatasetSpec, *, keep: pd.Timedelta, refresh_seconds: float = 10.0,
                 on_refresh: Callable[[float], None] | None = None) -> None:  # fmt: skip
        """`keep`: how much history before the source's latest day the grid holds (at least the features' reach).
        `on_refresh(unix time)`: called after each rebuild (the freshness gauge)."""
        self.engine, self.spec, self.keep = engine, spec, max(keep, store.lookback(spec))
        self.refresh_seconds = refresh_seconds
        self.on_refresh = on_refresh or (lambda at: None)
        self.step, self.horizon = duration(spec.history.step), duration(spec.history.horizon)
        self.stale_after = duration(spec.history.stale_after)
        self.grid: HistoryGrid | None = None
        self.version: object = None  # the feature table's latest computed_at when the grid was built
        self._stop = threading.Event()

    def refresh(self, force: bool = False) -> bool:
        """Rebuild the grid if the feature table changed since the last build (or if `force`)."""
        table = store.feature_table(self.engine, self.spec)
        with self.engine.connect() as connection:
            version = connection.execute(sa.select(sa.func.max(table.c.computed_at))).scalar()
        if not force and self.grid is not None and version == self.version:
            return False
        self.grid, self.version = self._build(), version  # one assignment: a request sees the old grid or the new
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
        known, _ = store.window_rows(self.engine, self.spec, start, None)
        grid = HistoryGrid.from_rows(self.spec, known)
        grid.last_known = _last_known(grid)
        return grid

    def lookup(self, columns: dict) -> Lookup:
        """The history features of validated request columns, and which rows' history is stale."""
        grid = self.grid
        times = event_times(self.spec, columns)
        names = labels(self.spec, columns)
        if grid is None:
            empty = {name: np.full(len(times), np.nan) for name in self.spec.history.names()}
            return Lookup(empty, np.ones(len(times), dtype=bool))
        slots = grid.slots(times)
        cut = slots - int(self.horizon // self.step)
        codes = np.array([grid.series.get(name, -1) for name in names], dtype="int64")
        last = np.array([_last_at_or_before(grid.last_known, c, s) for c, s in zip(codes, cut, strict=True)])
        stale = (last < 0) | (cut - last > int(self.stale_after // self.step))
        return Lookup(grid.features(names, slots), stale)


def _last_known(grid: HistoryGrid) -> list[np.ndarray]:
    """Per series, the slots where any history column has a value (sorted)."""
    known = np.zeros(next(iter(grid.grids.values())).shape, dtype=bool) if grid.grids else np.zeros((0, 0), bool)
    for values in grid.grids.values():
        known |= ~np.isnan(values)
    return [np.flatnonzero(row) for row in known]


def _last_at_or_before(last_known: list[np.ndarray], code: int, slot: int) -> int:
    """The last slot with a value at or before `slot` for series `code`; -1 if none (or an unknown series)."""
    if code < 0:
        return -1
    slots = last_known[code]
    position = np.searchsorted(slots, slot, side="right")
    return int(slots[position - 1]) if position else -1
