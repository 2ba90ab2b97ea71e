"""History features: past values of a series (lags, rolling windows), point-in-time correct.

One computation serves training (on the snapshot), the feature table the batch runner reads, and the API's
lookup: `HistoryGrid` holds the known values of each series on the spec's time grid, and `features` reads a
point's lags and windows from it. For a point at time t and a horizon h (the spec's `history.horizon`: how long
before t the prediction is made), a lag L reads the value at t - L (L >= h, the spec refuses less) and a window
W aggregates the values in (t - h - W, t - h]. Nothing later than t - h is read, whatever the rows hold.

Each window is aggregated on its own values alone (no running sums), so a value does not depend on how much
history came before it: a cache holding only the last days gives the same bits as the whole snapshot.

Gaps are declared one way: a missing step is null; a lag onto a gap is null, and a window aggregates the values
it has (null if none; std needs two).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd

from tiffin.core.spec import DatasetSpec, duration

_WINDOW_CELLS = 4_000_000  # values gathered at once when aggregating windows (32 MB)


def series_labels(spec: DatasetSpec, columns: pd.DataFrame | dict, rows: int) -> np.ndarray:
    """Each of `rows` rows' series as one text label ('' for a spec without `series`), from a frame or from a
    request's validated columns alike."""
    if not spec.series:
        return np.full(rows, "", dtype=object)
    values = [[str(value) for value in columns[name]] for name in spec.series]
    return np.array(["\x1f".join(parts) for parts in zip(*values, strict=True)], dtype=object)


@dataclass
class HistoryGrid:
    """The known values of each history column, per series, on the step grid from `origin`."""

    spec: DatasetSpec
    origin: pd.Timestamp
    series: dict[str, int]  # label -> row of the grids
    grids: dict[str, np.ndarray]  # column -> (series, slots), NaN where nothing is known

    @classmethod
    def from_rows(cls, spec: DatasetSpec, rows: pd.DataFrame) -> HistoryGrid:
        """The grid of `rows` (canonical): each row's value at its series and step, from the first row's step."""
        history = spec.history
        if history is None:
            raise ValueError(f"the spec {spec.name} declares no history features")
        step = duration(history.step)
        times = spec.event_time(rows)
        known = times.notna().to_numpy()
        origin = times[known].min().floor(step) if known.any() else pd.Timestamp(0)
        slots = np.zeros(len(rows), dtype="int64")
        slots[known] = ((times[known] - origin) // step).to_numpy(dtype="int64")
        labels = series_labels(spec, rows, len(rows))
        series = {label: code for code, label in enumerate(dict.fromkeys(labels[known]))}
        codes = np.array([series.get(label, -1) for label in labels], dtype="int64")
        width = int(slots[known].max()) + 1 if known.any() else 0
        grids = {}
        for column in dict.fromkeys(feature.column for feature in history.features):
            grid = np.full((len(series), width), np.nan)
            values = rows[column].to_numpy(dtype="float64", na_value=np.nan)
            grid[codes[known], slots[known]] = values[known]
            grids[column] = grid
        return cls(spec, origin, series, grids)

    def slots(self, times: pd.Series | np.ndarray) -> np.ndarray:
        """Each time's step on the grid (floored); times as a Series or a datetime64[ns] array."""
        moments = np.asarray(times, dtype="datetime64[ns]").view("int64")
        return (moments - self.origin.value) // self._plan.step

    @cached_property
    def _plan(self) -> _Plan:
        return _Plan.of(self.spec)

    def codes(self, labels: np.ndarray) -> np.ndarray:
        """Each series label's row of the grids; -1 for a series the grid has never seen."""
        return np.array([self.series.get(label, -1) for label in labels], dtype="int64")

    @property
    def width(self) -> int:
        """The number of slots: from the origin to the latest row's."""
        return next(iter(self.grids.values())).shape[1] if self.grids else 0

    def last_known(self, codes: np.ndarray, slots: np.ndarray) -> np.ndarray:
        """For each (series, slot), the last slot at or before it where any history column has a value; -1 if none."""
        width = self.width
        cells = self.known_cells
        inside = (codes >= 0) & (slots >= 0) & (width > 0)
        query = codes * width + np.minimum(slots, width - 1)
        position = np.searchsorted(cells, query, side="right") - 1
        found = cells[np.maximum(position, 0)] if len(cells) else np.zeros(len(query), dtype="int64")
        same_series = inside & (position >= 0) & (found // max(width, 1) == codes)
        return np.where(same_series, found % max(width, 1), -1)

    @cached_property
    def known_cells(self) -> np.ndarray:
        """series * width + slot of every cell with a value, sorted (row-major order is sorted)."""
        known = None
        for values in self.grids.values():
            known = ~np.isnan(values) if known is None else known | ~np.isnan(values)
        return np.flatnonzero(known) if known is not None else np.zeros(0, dtype="int64")

    def features(self, codes: np.ndarray, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The history features of points (series code, slot), in the spec's order; null where nothing is known."""
        plan = self._plan
        found: dict[str, np.ndarray] = {}
        for column, lags, windows in plan.reads:
            grid = self.grids[column]
            for name, steps in lags:
                found[name] = _at(grid, codes, slots - steps)
            for names, steps, aggregates in windows:
                for agg, values in _aggregated(grid, codes, slots - plan.ahead, steps, aggregates).items():
                    found[names[agg]] = values
        return found


@dataclass(frozen=True)
class _Plan:
    """The spec's history in steps, worked out once: durations are parsed per grid, never per request."""

    step: int  # nanoseconds
    ahead: int  # the horizon, in steps
    # per column: its lags (feature name, steps) and its windows ({aggregate: feature name}, steps, aggregates)
    reads: list[tuple[str, list[tuple[str, int]], list[tuple[dict[str, str], int, list[str]]]]]

    @classmethod
    def of(cls, spec: DatasetSpec) -> _Plan:
        history = spec.history
        step = duration(history.step)
        reads = []
        for feature in history.features:
            lags = [(feature.lag_name(lag), int(duration(lag) // step)) for lag in feature.lags]
            windows = [({agg: feature.window_name(agg, r.window) for agg in r.agg}, int(duration(r.window) // step),
                        list(r.agg)) for r in feature.rolling]  # fmt: skip
            reads.append((feature.column, lags, windows))
        return cls(step.value, int(duration(history.horizon) // step), reads)


def _aggregated(grid: np.ndarray, codes: np.ndarray, ends: np.ndarray, window: int,
                aggregates: list[str]) -> dict[str, np.ndarray]:  # fmt: skip
    """Each aggregate of each point's window over the values present (null when none; std: when fewer than two),
    window by window, in chunks of points to bound memory."""
    found = {agg: np.full(len(ends), np.nan) for agg in aggregates}
    chunk = max(1, _WINDOW_CELLS // window)
    for start in range(0, len(ends), chunk):
        part = slice(start, start + chunk)
        values = _windows(grid, codes[part], ends[part], window)
        for agg, result in _aggregates(values, aggregates).items():
            found[agg][part] = result
    return found


def _aggregates(values: np.ndarray, aggregates: list[str]) -> dict[str, np.ndarray]:
    """Row-wise aggregates of a (points, window) array over its non-null values."""
    missing = np.isnan(values)
    counts = (~missing).sum(axis=1)
    zeroed = np.where(missing, 0.0, values)
    sums = zeroed.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
        computed = {
            "sum": sums,
            "mean": means,
            "min": np.where(missing, np.inf, values).min(axis=1),
            "max": np.where(missing, -np.inf, values).max(axis=1),
        }
        if "std" in aggregates:
            deviations = np.where(missing, 0.0, values - means[:, None])
            computed["std"] = np.sqrt((deviations * deviations).sum(axis=1) / (counts - 1))
    found = {}
    for agg in aggregates:
        result = computed[agg]
        result[counts < (2 if agg == "std" else 1)] = np.nan
        found[agg] = result
    return found


def _at(grid: np.ndarray, codes: np.ndarray, slots: np.ndarray) -> np.ndarray:
    """grid[series, slot]; null off the grid or for an unknown series."""
    inside = (codes >= 0) & (slots >= 0) & (slots < grid.shape[1])
    found = np.full(len(slots), np.nan)
    found[inside] = grid[codes[inside], slots[inside]]
    return found


def _windows(grid: np.ndarray, codes: np.ndarray, ends: np.ndarray, window: int) -> np.ndarray:
    """Each point's `window` values ending at its slot `ends` (inclusive), as rows of a (points, window) array;
    null off the grid."""
    slots = ends[:, None] - (window - 1) + np.arange(window)
    inside = (codes[:, None] >= 0) & (slots >= 0) & (slots < grid.shape[1])
    found = np.full(slots.shape, np.nan)
    rows = np.broadcast_to(codes[:, None], slots.shape)
    found[inside] = grid[rows[inside], slots[inside]]
    return found


def history_features(spec: DatasetSpec, rows: pd.DataFrame, points: pd.DataFrame | None = None) -> pd.DataFrame:
    """The spec's history features for each of `points` (canonical frames with the series and time columns;
    default: the rows themselves), read from `rows` (canonical, with the history columns), indexed as `points`."""
    points = rows if points is None else points
    times = spec.event_time(points)
    if times.isna().any():
        raise ValueError("history features need each point's time: the contract refuses a row without one")
    grid = HistoryGrid.from_rows(spec, rows)
    found = grid.features(grid.codes(series_labels(spec, points, len(points))), grid.slots(times))
    return pd.DataFrame(found, index=points.index)
