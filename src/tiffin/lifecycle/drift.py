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
from tiffin.lifecycle.drift_reference import has_event_time

PSI_EPSILON = 1e-4  # stands in for an empty bin's share, so one empty bin does not make PSI infinite
# Numbers that went through a database or JSON may differ in the last digits: binning at 8 decimals means
# a value on a decile edge (common in coarse data, e.g. wind speed) falls in the same bin in both.
BIN_DECIMALS = 8
MISSING = "<missing>"
TAIL = 0.005  # tail_share: outside the reference's 0.5 % and 99.5 % quantiles
# unseen_share: a feed of a fixed resolution (whole numbers, a set number of decimals) repeats its values; one
# whose reference holds each value fewer times than this on average is continuous, and every value is new.
REPEATS = 10
# unseen_pairs: a pair of labels the reference would hold this many times if they were unrelated, and never holds,
# does not go together (rows come in blocks, a day's 24 hours share their labels: 100 is still four days).
PAIR_EXPECTED = 100
MONTH = "<month>"


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


# -- feed faults: values beyond the reference's tails, and values that stop changing ----------------


def tail_share(reference: pd.Series, current: pd.Series, weights: np.ndarray | None = None) -> float:
    """Share of the window's values outside the reference's central 99 % (its 0.5 % quantiles on each side).

    PSI's outer bins hold a tenth of the reference each, so values far beyond the reference (a unit change)
    count no more than values just inside its last decile; this counts them."""
    known = _numbers(current)
    known = known[~np.isnan(known)]
    values = _numbers(reference)
    weight = np.ones(len(values)) if weights is None else np.asarray(weights, dtype="float64")
    present = ~np.isnan(values) & (weight > 0)
    if not len(known) or not present.any():
        return float("nan")
    low, high = _weighted_quantiles(values[present], weight[present], np.array([TAIL, 1 - TAIL]))
    return float(np.mean((known < low) | (known > high)))


def longest_run(values: pd.Series, groups: np.ndarray | None = None) -> float:
    """The longest run of one value repeated in consecutive rows (in time order; `groups`: each row's stretch,
    a run ends where it changes: another series, or a gap in time). A feed stuck on one value makes it as long
    as the fault."""
    numbers = _numbers(values)
    if not len(numbers):
        return float("nan")
    group = np.zeros(len(numbers)) if groups is None else groups
    starts = np.ones(len(numbers), dtype=bool)
    starts[1:] = (numbers[1:] != numbers[:-1]) | (group[1:] != group[:-1])  # NaN != NaN: missing never runs
    run_ids = np.cumsum(starts)
    return float(np.bincount(run_ids).max())


def unseen_share(reference: pd.Series, current: pd.Series) -> float:
    """Share of the window's values that the reference never holds, for a feed of a fixed resolution (NaN for
    a continuous one). A unit change or a new rounding sends values off the feed's grid from its first hour,
    however ordinary their size: the share is then that of the faulty hours, not diluted by the weather."""
    values, known = _numbers(reference), _numbers(current)
    values, known = values[~np.isnan(values)], known[~np.isnan(known)]
    distinct = np.unique(values)
    if not len(known) or not len(distinct) or len(distinct) * REPEATS > len(values):
        return float("nan")
    return float(np.mean(~np.isin(known, distinct)))


def label_contexts(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """Each row's categorical labels (missing as a label of its own) and, where the frame has its event time,
    its calendar month: what a label is checked against in `unseen_pairs`."""
    found = pd.DataFrame({name: _labels(frame[name]).to_numpy() for name in spec.features.categorical if name in frame})
    if has_event_time(spec, frame):
        found[MONTH] = pd.to_datetime(spec.event_time(frame)).dt.month.astype(str).to_numpy()
    return found


def unseen_pairs(reference: pd.DataFrame, current: pd.DataFrame) -> dict[str, float]:
    """For each label column, the share of the window's rows whose label the reference never shows beside one of
    the row's other labels or its month, though it would show it PAIR_EXPECTED times or more if the two were
    unrelated. A relabelled field contradicts the fields it goes with (a holiday on a Saturday, a season in another
    month) from its first hour, where its share of labels moves no more than a week of weather would move it.

    A row that also holds a pair the reference never shows but is too rare to judge (a holiday on a Wednesday,
    where the reference's holidays fell on other days) is excused: the reference cannot say what goes with it, so
    its day off on a Wednesday contradicts nothing."""
    names = [name for name in reference.columns if name in current]
    if current.empty or not names:
        return {}
    contradicted = {name: np.zeros(len(current), dtype=bool) for name in names}
    unexplained = np.zeros(len(current), dtype=bool)
    counts = {name: reference[name].value_counts() for name in names}  # once a column, not once a pair
    for position, first in enumerate(names):
        share = counts[first] / counts[first].sum()
        for second in names[position + 1 :]:
            expected = current[second].map(counts[second]) * current[first].map(share)
            seen = set(reference[[first, second]].drop_duplicates().itertuples(index=False, name=None))
            unseen = np.fromiter((pair not in seen for pair in zip(current[first], current[second], strict=True)),
                                 bool, len(current))  # fmt: skip
            judged = expected.fillna(0).to_numpy() >= PAIR_EXPECTED
            unexplained |= unseen & ~judged
            for name in (first, second):
                contradicted[name] |= unseen & judged
    return {name: float((rows & ~unexplained).mean()) for name, rows in contradicted.items()}


def _line(reference: pd.DataFrame, name: str, others: list[str], weight: pd.Series) -> np.ndarray | None:
    """Intercept and slopes of `name` on `others`, least squares weighted by `weight` (None: too few rows)."""
    fit_rows = reference[[name, *others]][weight.to_numpy() > 0].dropna()
    if len(fit_rows) <= len(others) + 1:
        return None
    scale = np.sqrt(weight[fit_rows.index].to_numpy())
    design = np.column_stack([np.ones(len(fit_rows)), fit_rows[others].to_numpy("float64")]) * scale[:, None]
    return np.linalg.lstsq(design, fit_rows[name].to_numpy("float64") * scale, rcond=None)[0]


def residuals(
    reference: pd.DataFrame, current: pd.DataFrame, names: list[str]
) -> dict[str, tuple[pd.Series, pd.Series]]:
    """Each feature's residual from a line on the others, fitted on all the reference rows (fitted on a seasonal
    reference's few rows it follows the weather and alarms more, measured): {name: (reference residuals, window
    residuals)}. Weather moves such features together; a unit change or a swapped field moves one alone, so its
    residuals leave the reference's tails whatever the weather."""
    weight = pd.Series(np.ones(len(reference)), index=reference.index)
    found = {}
    for name in names:
        others = [other for other in names if other != name]
        line = _line(reference, name, others, weight)
        if line is not None:
            found[name] = tuple(  # type: ignore[assignment]
                pd.Series(frame[name].to_numpy("float64") - frame[others].to_numpy("float64") @ line[1:] - line[0])
                for frame in (reference, current)
            )
    return found


def series_order(spec: DatasetSpec, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(positions that sort the rows by series then event time; each sorted row's stretch: a number that changes
    where the series changes or time skips more than the data's step; whether each sorted row is one step after
    the row before it). Rows without their time columns stay in the order given, one stretch."""
    moments = np.arange(len(frame))
    if has_event_time(spec, frame):
        moments = pd.to_datetime(spec.event_time(frame)).to_numpy().astype("datetime64[ns]").astype("int64")
    keys = pd.DataFrame({"_time": moments})
    for name in spec.series:
        keys[name] = frame[name].to_numpy()
    order = np.lexsort([keys[name].to_numpy() for name in ["_time", *reversed(spec.series)]])
    series = keys.iloc[order].groupby(list(spec.series), sort=False).ngroup().to_numpy() if spec.series else None
    series = np.zeros(len(order)) if series is None else series
    steps = np.diff(moments[order], prepend=moments[order][:1])
    step = steps[steps > 0].min() if (steps > 0).any() else 0
    next_step = (steps == step) & (np.diff(series, prepend=series[:1]) == 0)
    next_step[:1] = False
    return order, np.cumsum(~next_step), next_step


def contiguous(spec: DatasetSpec, frame: pd.DataFrame, share: float = 0.9) -> bool:
    """Whether the rows are (nearly) every step of their series: a random sample of a long history is not, and
    the runs of one value in it say nothing of a feed's."""
    _, _, next_step = series_order(spec, frame)
    return bool(len(next_step) > 1 and next_step[1:].mean() >= share)


# -- per feature -----------------------------------------------------------------------------------


def drift_features(spec: DatasetSpec, reference: pd.DataFrame) -> list[tuple[str, str]]:
    """(feature, kind) of what drift measures: numeric, history and categorical features. Date features are
    left out: time always moves on."""
    history = [name for name in spec.history_columns if name in reference]
    return [*((name, "numeric") for name in [*spec.features.numeric, *history]),
            *((name, "categorical") for name in spec.features.categorical)]  # fmt: skip


def feature_psi(kind: str, reference: pd.Series, current: pd.Series, weights: np.ndarray | None = None) -> float:
    return (numeric_psi if kind == "numeric" else categorical_psi)(reference, current, weights)


def feed_features(spec: DatasetSpec) -> list[str]:
    """The numeric features a feed sends (history features are computed here, from the target): these are also
    checked for values beyond the reference's tails and for stuck values."""
    timing = {spec.timestamp.column, spec.timestamp.hour}
    return [name for name in spec.features.numeric if name not in timing]


def window_statistics(
    reference: pd.DataFrame, current: pd.DataFrame, spec: DatasetSpec, weights: np.ndarray | None = None
) -> dict[str, dict[str, float]]:
    """Every statistic of every feature of one window: {feature: {psi, and for a fed numeric feature tail_share,
    residual_tail, unseen_share, longest_run; for a categorical one unseen_pairs}} (a statistic that does not
    apply, such as unseen_share on a continuous feed, is left out)."""
    order, stretches, _ = series_order(spec, current)
    fed = [name for name in feed_features(spec) if name in current and name in reference]
    residual = residuals(reference, current, fed) if len(fed) > 1 else {}
    pairs = unseen_pairs(label_contexts(spec, reference), label_contexts(spec, current))
    found: dict[str, dict[str, float]] = {}
    for name, kind in drift_features(spec, reference):
        if name not in current:
            continue
        found[name] = {"psi": feature_psi(kind, reference[name], current[name], weights)}
        if name in feed_features(spec):
            found[name]["tail_share"] = tail_share(reference[name], current[name], weights)
            if name in residual:
                found[name]["residual_tail"] = tail_share(*residual[name], weights)
            found[name]["unseen_share"] = unseen_share(reference[name], current[name])
            found[name]["longest_run"] = longest_run(current[name].iloc[order], stretches)
        elif kind == "categorical":
            found[name]["unseen_pairs"] = pairs.get(name, np.nan)
        found[name] = {statistic: value for statistic, value in found[name].items()
                       if statistic == "psi" or not np.isnan(value)}  # fmt: skip
    return found


def drift_table(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    spec: DatasetSpec,
    threshold: float,
    weights: np.ndarray | None = None,
    limits: Mapping[str, Mapping[str, float]] | None = None,
) -> pd.DataFrame:
    """Each feature's statistics (history features included: logged with each prediction) against the reference
    rows (weighted by `weights`), and which crossed its limit: `limits` (calibrated: {feature: {statistic:
    limit}}) else PSI at `threshold`, the others then reported, not judged (they have no conventional
    threshold). PSI drifts at or over its limit; a share or a run over it."""
    kinds, records = dict(drift_features(spec, reference)), []
    for name, values in window_statistics(reference, current, spec, weights).items():
        limit = dict((limits or {}).get(name) or {"psi": threshold})
        crossed = [statistic for statistic, value in values.items() if statistic in limit
                   and (value >= limit[statistic] if statistic == "psi" else value > limit[statistic])]  # fmt: skip
        records.append({"feature": name, "kind": kinds[name], "psi": round(values["psi"], 4), "threshold": limit["psi"],
                        "tail_share": values.get("tail_share"), "tail_threshold": limit.get("tail_share"),
                        "residual_tail": values.get("residual_tail"), "residual_threshold": limit.get("residual_tail"),
                        "unseen_share": values.get("unseen_share"), "unseen_threshold": limit.get("unseen_share"),
                        "unseen_pairs": values.get("unseen_pairs"), "pair_threshold": limit.get("unseen_pairs"),
                        "longest_run": values.get("longest_run"), "run_threshold": limit.get("longest_run"),
                        "drifted": bool(crossed), "signals": ", ".join(crossed)})  # fmt: skip
    columns = ["feature", "kind", "psi", "threshold", "tail_share", "tail_threshold", "residual_tail",
               "residual_threshold", "unseen_share", "unseen_threshold", "unseen_pairs", "pair_threshold",
               "longest_run", "run_threshold", "drifted", "signals"]  # fmt: skip
    return pd.DataFrame.from_records(records, columns=columns)
