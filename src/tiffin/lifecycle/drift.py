"""Drift statistics: the Population Stability Index (PSI) of a feature between a reference and a window.

Numeric features are binned at the reference's deciles, categorical ones by category (a missing value is a
category of its own). A reference's rows may carry weights (a seasonal reference re-weights the training
rows, `drift_reference`): the deciles and the shares are then weighted ones. PSI >= 0.2 is the usual
"significant shift"; `calibration` finds each feature's own threshold.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from tiffin.core.spec import DatasetSpec

PSI_EPSILON = 1e-4  # stands in for an empty bin's share, so one empty bin does not make PSI infinite
# Numbers that went through a database or JSON may differ in the last digits: binning at 8 decimals means
# a value on a decile edge (common in coarse data, e.g. wind speed) falls in the same bin in both.
BIN_DECIMALS = 8
MISSING = "<missing>"


# -- the statistic -----------------------------------------------------------------------------


def psi(expected: np.ndarray, actual: np.ndarray, epsilon: float = PSI_EPSILON) -> float:
    """PSI of two distributions given as bin shares: sum((a - e) * ln(a / e)); empty bins count as epsilon."""
    e = np.maximum(np.asarray(expected, dtype="float64"), epsilon)
    a = np.maximum(np.asarray(actual, dtype="float64"), epsilon)
    return float(np.sum((a - e) * np.log(a / e)))


def decile_edges(reference: pd.Series, weights: np.ndarray | None = None) -> np.ndarray:
    """Inner bin edges: the reference's (weighted) deciles, duplicates dropped (the outer bins are open-ended)."""
    values = _numbers(reference)
    present = ~np.isnan(values) & (weights > 0 if weights is not None else True)
    if not present.any():
        return np.array([])
    deciles = np.linspace(0.1, 0.9, 9)
    if weights is None:
        return np.unique(np.quantile(values[present], deciles))
    return np.unique(np.round(_weighted_quantiles(values[present], weights[present], deciles), BIN_DECIMALS))


def _weighted_quantiles(values: np.ndarray, weights: np.ndarray, quantiles: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ordered, weight = values[order], weights[order]
    middle = (np.cumsum(weight) - weight / 2) / weight.sum()  # each value at the middle of its weight
    return np.interp(quantiles, middle, ordered)


def _numbers(values: pd.Series) -> np.ndarray:
    return np.round(pd.to_numeric(values, errors="coerce").astype("float64").to_numpy(), BIN_DECIMALS)


def _bin_shares(values: pd.Series, edges: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Shares per bin (x <= edge falls left of it), with missing values as one more bin at the end; each
    value counts its weight (default: 1)."""
    numbers = _numbers(values)
    weight = np.ones(len(numbers)) if weights is None else np.asarray(weights, dtype="float64")
    present = ~np.isnan(numbers)
    codes = np.searchsorted(edges, numbers[present], side="left")
    counts = np.append(np.bincount(codes, weights=weight[present], minlength=len(edges) + 1), weight[~present].sum())
    return counts / max(weight.sum(), 1e-12) if weights is not None else counts / max(len(numbers), 1)


def numeric_psi(reference: pd.Series, current: pd.Series, weights: np.ndarray | None = None) -> float:
    """PSI of `current` against `reference` (its rows weighted by `weights`, default equally)."""
    if current.empty:  # nothing to compare: unknown, not "no drift"
        return float("nan")
    edges = decile_edges(reference, weights)
    return psi(_bin_shares(reference, edges, weights), _bin_shares(current, edges))


def _labels(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), MISSING).astype(str)


def categorical_psi(reference: pd.Series, current: pd.Series, weights: np.ndarray | None = None) -> float:
    """PSI over the categories of both samples: one never seen in training counts fully as drift."""
    if current.empty:
        return float("nan")
    if weights is None:
        expected = _labels(reference).value_counts(normalize=True)
    else:
        expected = pd.Series(weights, index=_labels(reference).to_numpy()).groupby(level=0).sum()
        expected = expected[expected > 0] / expected.sum()
    actual = _labels(current).value_counts(normalize=True)
    categories = expected.index.union(actual.index)
    return psi(
        expected.reindex(categories, fill_value=0).to_numpy(), actual.reindex(categories, fill_value=0).to_numpy()
    )


# -- per feature -----------------------------------------------------------------------------------


def drift_features(spec: DatasetSpec, reference: pd.DataFrame) -> list[tuple[str, str]]:
    """(feature, kind) of what drift measures: numeric, history and categorical features. Date features are
    left out: time always moves on."""
    history = [name for name in spec.history_columns if name in reference]
    return [*((name, "numeric") for name in [*spec.features.numeric, *history]),
            *((name, "categorical") for name in spec.features.categorical)]  # fmt: skip


def feature_psi(kind: str, reference: pd.Series, current: pd.Series, weights: np.ndarray | None = None) -> float:
    return (numeric_psi if kind == "numeric" else categorical_psi)(reference, current, weights)


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: DatasetSpec,
    threshold: float,
    weights: np.ndarray | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> pd.DataFrame:
    """PSI of each feature (history features included: logged with each prediction) against the reference
    rows (weighted by `weights`); drifted at its own threshold (`thresholds`, calibrated) else `threshold`."""
    records = [
        {"feature": name, "kind": kind, "psi": round(feature_psi(kind, reference[name], current[name], weights), 4),
         "threshold": (thresholds or {}).get(name, threshold)}
        for name, kind in drift_features(spec, reference)
        if name in current
    ]  # fmt: skip
    table = pd.DataFrame.from_records(records, columns=["feature", "kind", "psi", "threshold"])
    return table.assign(drifted=table["psi"] >= table["threshold"])
