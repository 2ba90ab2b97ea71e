"""Drift thresholds calibrated on the model's own training period, at a chosen false-alarm rate.

PSI >= 0.2 is a convention, not a property of a feed: a feature whose weather swings from week to week
crosses it on healthy data, a steady one never comes near it. So `calibrate` replays the training
period in windows of the monitoring size (sliding by a quarter of it), compares each window with the
reference it would get in production (`monitor.reference`, built from the reference rows outside the
window and its neighbouring windows, so that no window is compared with itself), and puts each
feature's limits where healthy windows cross them at the target rate: `alarms_per_quarter` alarms per
feature per quarter, i.e. a share `alarms_per_quarter * window_days / 91.3` of windows, shared out
equally between the feature's statistics (PSI; for a fed numeric feature also the shares of values
beyond the reference's tails, of residuals beyond theirs and of values the reference never holds, and the
longest run of one value; for a categorical one the share of labels that contradict the row's other labels
or month, see `drift`). A PSI threshold is never below `feature_psi` (the prediction's never below
`prediction_psi`), a share's never below `TAIL_FLOOR`, a run's never below `RUN_FLOOR` hours.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiffin.core.params import Monitor
from tiffin.core.spec import DatasetSpec
from tiffin.lifecycle import drift_reference
from tiffin.lifecycle.drift import contiguous, numeric_psi, window_statistics
from tiffin.storage.modelstore import LoadedModel

DAYS_PER_QUARTER = 365.25 / 4
PREDICTION = "prediction"
TAIL_FLOOR = 0.02  # twice what a healthy window has outside the reference's 0.5 % tails
RUN_FLOOR = 3.0
DECIMALS = 4  # of a limit
# A feed check's statistic -> (its key in a calibration, the floor of its limit).
FEED_CHECKS = {"tail_share": ("tail_threshold", TAIL_FLOOR), "residual_tail": ("residual_threshold", TAIL_FLOOR),
               "unseen_share": ("unseen_threshold", TAIL_FLOOR), "unseen_pairs": ("pair_threshold", TAIL_FLOOR),
               "longest_run": ("run_threshold", RUN_FLOOR)}  # fmt: skip


@dataclass(frozen=True)
class Calibration:
    """Per-feature thresholds, and how they were found (what monitoring reports and checks)."""

    model: str
    reference: str
    window_days: int
    alarms_per_quarter: float
    quantile: float  # the share of healthy windows below each threshold
    floor: float  # monitor.feature_psi: no threshold is lower
    prediction_floor: float  # monitor.prediction_psi
    min_rows: int  # monitor.min_rows: a window with fewer rows was not replayed
    windows: int  # how many training windows were replayed
    # feature -> threshold (PSI), median, p90, max of its PSI over the windows; for a fed numeric feature also
    # tail_threshold and run_threshold
    features: dict[str, dict[str, float]]
    prediction: dict[str, float]

    @property
    def thresholds(self) -> dict[str, float]:
        """Each feature's PSI threshold."""
        return {name: stats["threshold"] for name, stats in self.features.items()}

    @property
    def limits(self) -> dict[str, dict[str, float]]:
        """Each feature's limit per statistic, as `drift.drift_table` judges them."""
        keys = {"psi": "threshold", **{statistic: key for statistic, (key, _) in FEED_CHECKS.items()}}
        return {name: {statistic: stats[key] for statistic, key in keys.items() if key in stats}
                for name, stats in self.features.items()}  # fmt: skip

    def fits(self, settings: Monitor) -> bool:
        """Calibrated under these settings (a changed one needs a new calibration)."""
        return (self.reference, self.window_days, self.alarms_per_quarter, self.floor, self.prediction_floor,
                self.min_rows) == (settings.reference, settings.window_days, settings.alarms_per_quarter,
                                   settings.feature_psi, settings.prediction_psi, settings.min_rows)  # fmt: skip

    def save(self, path: Path) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path

    @classmethod
    def load(cls, path: Path) -> Calibration | None:
        return cls(**json.loads(path.read_text(encoding="utf-8"))) if path.exists() else None


def windows(moments: pd.Series, window_days: int) -> list[pd.Timestamp]:
    """Starts of the whole windows inside the span of `moments`, a quarter of a window apart."""
    first, last = moments.min().normalize(), moments.max()
    stride = pd.Timedelta(days=max(1, -(-window_days // 4)))
    starts = pd.date_range(first, last - pd.Timedelta(days=window_days) + pd.Timedelta(hours=1), freq=stride)
    return list(starts)


def target_quantile(settings: Monitor) -> float:
    """The share of healthy windows a threshold lets through."""
    return float(np.clip(1 - settings.alarms_per_quarter * settings.window_days / DAYS_PER_QUARTER, 0.0, 1.0))


def window_psis(reference: pd.DataFrame, spec: DatasetSpec, settings: Monitor) -> pd.DataFrame:
    """PSI of every feature and of the predictions, per training window (one row per window)."""
    moments = pd.to_datetime(spec.event_time(reference)).reset_index(drop=True)
    reference = reference.reset_index(drop=True)
    width = pd.Timedelta(days=settings.window_days)
    records = []
    for start in windows(moments, settings.window_days):
        inside = ((moments >= start) & (moments < start + width)).to_numpy()
        # Left out: the window and a window's width on each side (neighbouring days are alike).
        outside = ((moments < start - width) | (moments >= start + 2 * width)).to_numpy()
        if inside.sum() < settings.min_rows or outside.sum() < settings.min_rows:
            continue
        window, rest = reference[inside], reference[outside]
        against = drift_reference.build(rest, window, spec, settings.reference, settings.min_rows)
        if not np.any(against.weights > 0):
            continue
        record: dict[str, Any] = {"start": start}
        for name, found in window_statistics(against.rows, window, spec, against.weights).items():
            record |= {
                name if statistic == "psi" else f"{name}:{statistic}": value for statistic, value in found.items()
            }
        record[PREDICTION] = numeric_psi(against.rows[PREDICTION], window[PREDICTION], against.weights)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _limit(values: pd.Series, quantile: float, floor: float) -> float:
    """The quantile of the healthy windows' values, never under `floor` (the floor where none was measured),
    rounded up: rounded to the nearest, one healthy window's own value (a day of a four-week window, 0.035714)
    would cross its limit (0.0357)."""
    known = values.dropna()
    value = max(floor, float(np.quantile(known, quantile, method="higher"))) if len(known) else floor
    return float(np.ceil(round(value * 10**DECIMALS, 6)) / 10**DECIMALS)


def _stats(values: pd.Series, quantile: float, floor: float) -> dict[str, float]:
    values = values.dropna()
    if values.empty:
        return {"threshold": floor}
    return {
        "threshold": _limit(values, quantile, floor),
        "median": round(float(values.median()), 4),
        "p90": round(float(values.quantile(0.9)), 4),
        "max": round(float(values.max()), 4),
    }


def statistic_quantile(quantile: float, statistics: int) -> float:
    """Each statistic's share of the feature's false alarms: `statistics` of them at 1 - (1 - quantile) / n each
    alarm at most at the feature's rate together."""
    return 1 - (1 - quantile) / statistics


def _feature_limits(table: pd.DataFrame, name: str, quantile: float, floor: float) -> dict[str, float]:
    present = {kind: key_floor for kind, key_floor in FEED_CHECKS.items() if f"{name}:{kind}" in table}
    each = statistic_quantile(quantile, 1 + len(present))
    limits = _stats(table[name], each, floor)
    for kind, (key, least) in present.items():
        limits[key] = _limit(table[f"{name}:{kind}"], each, least)
    return limits


def calibrate(reference: pd.DataFrame, spec: DatasetSpec, settings: Monitor, model: str) -> Calibration:
    """Thresholds for `model` from its reference rows (raises ValueError when the rows span no whole window)."""
    table = window_psis(reference, spec, settings)
    if table.empty:
        raise ValueError(
            f"the reference rows of {model} hold no {settings.window_days}-day window with at least "
            f"{settings.min_rows} rows (monitor.min_rows) and as many outside it: too short a history to calibrate "
            f"on, or too few rows a window (daily data: raise monitor.window_days or lower monitor.min_rows)"
        )
    if not contiguous(spec, reference):  # a sample of a long history: its runs of one value mean nothing
        table = table.drop(columns=[column for column in table.columns if column.endswith(":longest_run")])
    quantile = target_quantile(settings)
    names = [name for name in table.columns if name not in ("start", PREDICTION) and ":" not in name]
    features = {name: _feature_limits(table, name, quantile, settings.feature_psi) for name in names}
    return Calibration(
        model=model, reference=settings.reference, window_days=settings.window_days,
        alarms_per_quarter=settings.alarms_per_quarter, quantile=round(quantile, 4), floor=settings.feature_psi,
        prediction_floor=settings.prediction_psi, min_rows=settings.min_rows, windows=len(table),
        features=features, prediction=_stats(table[PREDICTION], quantile, settings.prediction_psi),
    )  # fmt: skip


def calibrate_model(model: LoadedModel, settings: Monitor) -> Calibration:
    """Calibrate a stored model on its reference rows and keep the thresholds in its folder of the store,
    where `tiffin monitor` reads them."""
    found = calibrate(model.reference(), model.spec, settings, model.tag)
    found.save(model.calibration_file)
    return found


def summary(calibration: Calibration, where: Path) -> str:
    """A few lines for the terminal: the thresholds that differ from the floor, and where they are."""
    raised = {name: t for name, t in calibration.thresholds.items() if t > calibration.floor}
    named = ", ".join(f"{name} {value:g}" for name, value in sorted(raised.items(), key=lambda kv: -kv[1]))
    return "\n".join([
        f"calibrated {calibration.model}: {calibration.windows} training windows of {calibration.window_days} days "
        f"against the {calibration.reference} reference, for {calibration.alarms_per_quarter} false alarm(s) per "
        f"feature per quarter (the {calibration.quantile:.0%} quantile of healthy windows, shared out between a "
        f"feature's statistics)",
        f"  PSI thresholds over the floor {calibration.floor:g}: {named or 'none'}",
        f"  prediction PSI threshold {calibration.prediction['threshold']:g}",
        f"thresholds: {where}",
    ])  # fmt: skip
