"""What a monitoring window is compared with: the drift reference, chosen in params (`monitor.reference`).

A whole-year reference makes every summer window "drift" against a year of mostly other weather: the
alarm rings on the calendar, not on the feed. So the reference can follow the calendar:

- `training`: the model's reference rows as they are (a sample of its training rows).
- `profile`: the reference rows re-weighted so that each hour-of-week x season cell weighs what it
  weighs in the window (season: the quarter of the year by month, Dec-Feb, Mar-May, Jun-Aug, Sep-Nov).
  A July week is compared with training summers' hours, in the week's own mix of hours.
- `year_ago`: the reference rows of the same calendar days a year earlier, re-weighted by hour of week;
  where the reference does not reach back that far (fewer than `min_rows` rows there), the profile.

The window's rows are never re-weighted: only what they are compared with changes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from tiffin.core.spec import DatasetSpec

Kind = Literal["training", "profile", "year_ago"]
HOURS_OF_WEEK = 7 * 24
YEAR = pd.DateOffset(years=1)


@dataclass(frozen=True)
class Reference:
    """Reference rows and their weights (each row's share of the reference: they sum to 1)."""

    rows: pd.DataFrame
    weights: np.ndarray
    kind: str  # the kind used (a year_ago without history says `profile`)
    note: str  # for the report: which reference, of how many rows

    @property
    def used(self) -> pd.DataFrame:
        """The rows that weigh anything."""
        return self.rows[self.weights > 0]


def hour_of_week(moments: pd.Series) -> np.ndarray:
    return (moments.dt.dayofweek * 24 + moments.dt.hour).to_numpy()


def three_month_band(moments: pd.Series) -> np.ndarray:
    """0 for Dec-Feb, 1 for Mar-May, 2 for Jun-Aug, 3 for Sep-Nov."""
    return ((moments.dt.month.to_numpy() % 12) // 3).astype("int64")


def cells(moments: pd.Series, *, by_season: bool = True) -> np.ndarray:
    """Each moment's hour-of-week (x season) cell."""
    return hour_of_week(moments) + (HOURS_OF_WEEK * three_month_band(moments) if by_season else 0)


def matched_weights(reference_cells: np.ndarray, window_cells: np.ndarray) -> np.ndarray:
    """Weights that give each cell of the reference the window's share of it (cells the window has and the
    reference lacks cannot be matched: the rest is re-normalised)."""
    window_share = pd.Series(window_cells).value_counts(normalize=True)
    counts = pd.Series(reference_cells).value_counts()
    weights = pd.Series(reference_cells).map(window_share).fillna(0.0) / pd.Series(reference_cells).map(counts)
    total = weights.sum()
    return (weights / total).to_numpy() if total > 0 else weights.to_numpy()


MIN_COVERED = 0.5  # a profile must match at least half the window's rows in its cells, else a coarser one


def covered(reference_cells: np.ndarray, window_cells: np.ndarray) -> float:
    """The share of the window's rows whose cell the reference has."""
    return float(np.isin(window_cells, reference_cells).mean()) if len(window_cells) else 0.0


def _times(spec: DatasetSpec, frame: pd.DataFrame) -> pd.Series:
    return pd.to_datetime(spec.event_time(frame)).reset_index(drop=True)


def has_event_time(spec: DatasetSpec, frame: pd.DataFrame) -> bool:
    """Whether the frame holds the columns its event time is made of."""
    return {spec.timestamp.column, spec.timestamp.hour} - {None} <= set(frame.columns)


def _training(rows: pd.DataFrame, why: str = "") -> Reference:
    return Reference(rows, np.full(len(rows), 1 / max(len(rows), 1)), "training",
                     f"the training reference ({len(rows)} rows){why}")  # fmt: skip


def build(rows: pd.DataFrame, window: pd.DataFrame, spec: DatasetSpec, kind: Kind, min_rows: int = 100) -> Reference:
    """The reference of `kind` for the window's rows (`rows`: the model's reference rows)."""
    rows = rows.reset_index(drop=True)
    if kind == "training" or window.empty:
        return _training(rows)
    if not (has_event_time(spec, rows) and has_event_time(spec, window)):
        return _training(rows, f": no event time in the rows to build the {kind} reference from")
    moments, window_moments = _times(spec, rows), _times(spec, window)
    if kind == "year_ago":
        year_ago = _year_ago(rows, moments, window_moments, min_rows)
        if year_ago is not None:
            return year_ago
    why = f": the reference has fewer than {min_rows} rows a year before this window" if kind == "year_ago" else ""
    for by_season, name in ((True, "hour-of-week x season profile"), (False, "hour-of-week profile")):
        reference_cells, window_cells = cells(moments, by_season=by_season), cells(window_moments, by_season=by_season)
        share = covered(reference_cells, window_cells)
        if share >= MIN_COVERED:
            weights = matched_weights(reference_cells, window_cells)
            return Reference(rows, weights, "profile",
                             f"the {name} ({int((weights > 0).sum())} of {len(rows)} reference rows, "
                             f"{share:.0%} of the window's rows matched){why}")  # fmt: skip
        why += f"; the {name} matches only {share:.0%} of the window's rows (its season is not in the reference)"
    return _training(rows, why)


def _year_ago(rows: pd.DataFrame, moments: pd.Series, window_moments: pd.Series, min_rows: int) -> Reference | None:
    start, end = window_moments.min() - YEAR, window_moments.max() - YEAR
    inside = ((moments >= start) & (moments <= end)).to_numpy()
    if inside.sum() < min_rows:
        return None
    weights = np.zeros(len(rows))
    weights[inside] = matched_weights(cells(moments[inside], by_season=False), cells(window_moments, by_season=False))
    note = f"the same days a year earlier, {start:%Y-%m-%d} to {end:%Y-%m-%d} ({int(inside.sum())} reference rows)"
    return Reference(rows, weights, "year_ago", note)
