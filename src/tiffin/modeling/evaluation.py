"""Metrics overall and per slice, for the model and the naive baseline side by side."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from sklearn.metrics import mean_absolute_error, r2_score, root_mean_squared_error

from tiffin.core.spec import SliceSpec


def regression_metrics(actual: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    if len(actual) == 0:
        return {"rows": 0}
    metrics = {
        "rows": len(actual),
        "mae": mean_absolute_error(actual, predicted),
        "rmse": root_mean_squared_error(actual, predicted),
    }
    if len(actual) > 1:
        metrics["r2"] = r2_score(actual, predicted)
    return {name: round(float(value), 4) if name != "rows" else int(value) for name, value in metrics.items()}


def segments(frame: pd.DataFrame, slice_spec: SliceSpec) -> pd.Series:
    """The segment each row falls in for one slice: a category, or a labelled bin."""
    column = frame[slice_spec.column]
    if slice_spec.bins:
        binned = pd.cut(column.astype("float64"), slice_spec.bins, labels=slice_spec.labels, right=False)
        return binned.astype(object).where(binned.notna(), "<missing>").astype(str)
    return column.astype(object).where(column.notna(), "<missing>").astype(str)


def segment_masks(frame: pd.DataFrame, slices: list[SliceSpec]) -> Iterator[tuple[str, str, np.ndarray]]:
    """(slice title, segment, row mask) for every segment of every slice, segments in sorted order."""
    for slice_spec in slices:
        segment_of = segments(frame, slice_spec).to_numpy()
        for segment in sorted(set(segment_of)):
            yield slice_spec.title, segment, segment_of == segment


def slice_table(
    frame: pd.DataFrame,
    actual: np.ndarray,
    predicted: np.ndarray,
    baseline: np.ndarray,
    slices: list[SliceSpec],
) -> pd.DataFrame:
    """One row per (slice, segment): rows, model MAE/RMSE and the baseline's MAE."""
    records = []
    for title, segment, mask in segment_masks(frame, slices):
        model = regression_metrics(actual[mask], predicted[mask])
        records.append(
            {
                "slice": title,
                "segment": segment,
                "rows": model["rows"],
                "mae": model["mae"],
                "rmse": model["rmse"],
                "baseline_mae": regression_metrics(actual[mask], baseline[mask])["mae"],
            }
        )
    return pd.DataFrame.from_records(records)


def series_verdicts(frame: pd.DataFrame, series: list[str], actual: np.ndarray, predicted: np.ndarray,
                    baseline: np.ndarray, min_rows: int) -> pd.DataFrame:  # fmt: skip
    """One row per series: rows, model and baseline MAE, and the verdict: `beats`, `loses` (the baseline's MAE is
    not above the model's) or `too few rows` (under `min_rows`: reported, not judged)."""
    records = []
    if not series:
        return pd.DataFrame.from_records(records, columns=["series", "rows", "mae", "baseline_mae", "verdict"])
    label = frame[series].astype(str).agg(" / ".join, axis=1).to_numpy()
    for name in sorted(set(label)):
        mask = label == name
        model, naive = (
            regression_metrics(actual[mask], predicted[mask]),
            regression_metrics(actual[mask], baseline[mask]),
        )
        verdict = "too few rows" if model["rows"] < min_rows else "beats" if model["mae"] < naive["mae"] else "loses"
        records.append({"series": name, "rows": model["rows"], "mae": model["mae"], "baseline_mae": naive["mae"],
                        "verdict": verdict})  # fmt: skip
    return pd.DataFrame.from_records(records, columns=["series", "rows", "mae", "baseline_mae", "verdict"])
