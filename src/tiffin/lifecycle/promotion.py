"""The promotion gate: whether a candidate may replace the champion (the state itself: `storage.champion`).

The gate works as TFX's Evaluator blesses a model: the candidate and the current champion score the
same, latest holdout; the candidate is promoted only if it beats the champion overall by a margin
and regresses no slice by more than a tolerance. Both are judged on intervals, not point estimates: a
block bootstrap over the holdout's days says how much of a difference is the holdout's noise. The
first model is promoted without a baseline.
"""

from __future__ import annotations

import getpass
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiffin.core.params import Bless
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.evaluation import regression_metrics, segment_masks
from tiffin.storage import paths
from tiffin.storage.champion import ChampionState
from tiffin.storage.files import read_json


def actor(tool: str) -> str:
    """Who made a change by hand: the CI actor, else the user, as `tool (name)`."""
    return f"{tool} ({os.environ.get('GITHUB_ACTOR') or getpass.getuser()})"


def latest_decision(root: Path = Path()) -> dict[str, Any] | None:
    """The gate's latest decision (eval/blessing.json of the project at `root`), if it has made one."""
    path = root / paths.BLESSING
    return read_json(path) if path.exists() else None


def decision_about(tag: str, state: ChampionState) -> dict[str, Any] | None:
    """The decision that promoted `tag`, else the gate's latest one if it was about `tag` (not promoted)."""
    decision = state.decision_for(tag) or latest_decision()
    return decision if decision and decision.get("candidate") == tag else None


GateRules = Bless  # params.yaml `bless:` (tiffin.core.params): how much better overall, how much worse per slice


# -- the gate ------------------------------------------------------------------------------------


def slice_errors(spec: DatasetSpec, holdout: pd.DataFrame, predicted: np.ndarray, metric: str) -> pd.DataFrame:
    """Error per (slice, segment) of one model on the holdout."""
    actual = holdout[spec.target].to_numpy(dtype="float64")
    rows = [{"slice": title, "segment": segment, "rows": int(mask.sum()),
             "error": regression_metrics(actual[mask], predicted[mask])[metric]}
            for title, segment, mask in segment_masks(holdout, spec.slices)]  # fmt: skip
    return pd.DataFrame.from_records(rows)


def _losses(actual: np.ndarray, predicted: np.ndarray, metric: str) -> np.ndarray:
    """Per row, what the metric averages: the absolute error (MAE) or the squared error (RMSE)."""
    error = predicted - actual
    return np.abs(error) if metric == "mae" else error**2


def _metric(mean_loss: np.ndarray, metric: str) -> np.ndarray:
    return mean_loss if metric == "mae" else np.sqrt(mean_loss)


def bootstrap_changes(days: np.ndarray, groups: np.ndarray, candidate_loss: np.ndarray, champion_loss: np.ndarray,
                      metric: str, samples: int, seed: int) -> np.ndarray:  # fmt: skip
    """Relative error change (candidate / champion - 1) per resample (rows) and group (columns: `groups` is one
    boolean row mask per group), resampling whole days with replacement: hours of one day share their weather,
    so their errors move together, and resampling hours would understate the noise.

    Vectorised over days: per-day sums of each model's loss and of rows per group, then one matrix product of
    the resamples' day counts with them."""
    n_days = int(days.max()) + 1
    masks = groups.T.astype("float64")  # rows x groups

    def per_day(values: np.ndarray) -> np.ndarray:  # days x groups
        return np.stack([np.bincount(days, weights=values * mask, minlength=n_days) for mask in masks.T], axis=1)

    picks = np.random.default_rng(seed).integers(0, n_days, size=(samples, n_days))
    offsets = (picks + n_days * np.arange(samples)[:, None]).ravel()
    counts = np.bincount(offsets, minlength=samples * n_days).reshape(samples, n_days).astype("float64")
    rows = counts @ per_day(np.ones_like(candidate_loss))
    with np.errstate(divide="ignore", invalid="ignore"):  # a resample without a group's rows: no estimate (NaN)
        ours = _metric(counts @ per_day(candidate_loss) / rows, metric)
        theirs = _metric(counts @ per_day(champion_loss) / rows, metric)
        return ours / theirs - 1


def _intervals(changes: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    tail = (1 - confidence) / 2
    with np.errstate(all="ignore"):
        low, high = np.nanquantile(np.where(np.isfinite(changes), changes, np.nan), [tail, 1 - tail], axis=0)
    return low.round(4), high.round(4)


def _compared(spec: DatasetSpec, holdout: pd.DataFrame, actual: np.ndarray, candidate: np.ndarray,
              champion: np.ndarray, rules: GateRules) -> tuple[pd.DataFrame, dict[str, Any]]:  # fmt: skip
    """The slice table with point changes and intervals, and the overall change's."""
    found = list(segment_masks(holdout, spec.slices))
    masks = np.stack([np.ones(len(holdout), dtype=bool), *(mask for _, _, mask in found)])
    losses = [_losses(actual, predicted, rules.metric) for predicted in (candidate, champion)]
    rows = masks.sum(axis=1)
    # Point estimates from the same per-row losses the bootstrap resamples (numpy: 13 slices x 2 models of
    # scikit-learn's checks would cost more than the whole bootstrap).
    ours, theirs = (_metric(masks.astype("float64") @ loss / rows, rules.metric).round(4) for loss in losses)
    table = pd.DataFrame({"slice": [title for title, _, _ in found], "segment": [segment for _, segment, _ in found],
                          "rows": rows[1:], f"candidate_{rules.metric}": ours[1:],
                          f"champion_{rules.metric}": theirs[1:]})  # fmt: skip
    table["change"] = (table[f"candidate_{rules.metric}"] / table[f"champion_{rules.metric}"] - 1).round(4)
    days, _ = pd.factorize(spec.event_time(holdout).dt.floor("D"))
    changes = bootstrap_changes(days, masks, *losses, rules.metric, rules.bootstrap_samples, rules.seed)
    judged = table["rows"] >= rules.min_slice_rows
    # The judged slices' intervals are simultaneous (Bonferroni): a dozen slices must not be a dozen chances
    # for the holdout's noise to look like a regression.
    slice_confidence = 1 - (1 - rules.confidence) / max(int(judged.sum()), 1)
    low, high = _intervals(changes, rules.confidence)
    slice_low, slice_high = _intervals(changes[:, 1:], slice_confidence)
    table["low"], table["high"] = slice_low, slice_high
    # Worse beyond the tolerance, and surely worse at all: a small slice's noise alone can pass the tolerance.
    table["ok"] = ~judged | ~((table["change"] > rules.slice_tolerance) & (table["low"] > 0))
    bootstrap = {"days": int(days.max()) + 1, "samples": rules.bootstrap_samples, "seed": rules.seed,
                 "confidence": rules.confidence, "slice_confidence": round(slice_confidence, 4),
                 "overall": [float(low[0]), float(high[0])]}  # fmt: skip
    return table, bootstrap


def decide(
    spec: DatasetSpec,
    holdout: pd.DataFrame,
    candidate: tuple[str, np.ndarray],
    champion: tuple[str, np.ndarray] | None,
    rules: GateRules,
) -> dict[str, Any]:
    """Bless the candidate or not; the decision with its numbers and intervals, overall and per slice.

    Promoted when the overall change's interval lies wholly at or below -margin (better by the margin, beyond
    the holdout's noise) and no judged slice's interval lies wholly above the tolerance (worse beyond it, beyond
    the noise); slices under `min_slice_rows` rows are reported, not judged."""
    actual = holdout[spec.target].to_numpy(dtype="float64")
    candidate_tag, candidate_predicted = candidate
    window = spec.timestamp.column
    decision: dict[str, Any] = {
        "candidate": candidate_tag,
        "champion": champion[0] if champion else None,
        "holdout": {"rows": len(holdout), "start": str(holdout[window].min().date()),
                    "end": str(holdout[window].max().date())},
        "rules": rules.model_dump(),
        "overall": {"candidate": regression_metrics(actual, candidate_predicted)},
    }  # fmt: skip
    if champion is None:
        ours = slice_errors(spec, holdout, candidate_predicted, rules.metric)
        decision["slices"] = ours.rename(columns={"error": f"candidate_{rules.metric}"}).to_dict("records")
        return decision | {"blessed": True, "reasons": ["first model: promoted without a baseline"]}

    decision["overall"]["champion"] = regression_metrics(actual, champion[1])
    new, old = decision["overall"]["candidate"][rules.metric], decision["overall"]["champion"][rules.metric]
    decision["overall"]["change"] = round(new / old - 1, 4)
    table, decision["bootstrap"] = _compared(spec, holdout, actual, candidate_predicted, champion[1], rules)
    decision["overall"]["interval"] = decision["bootstrap"]["overall"]
    decision["slices"] = table.to_dict("records")
    reasons = _reasons(decision, table, rules)
    return decision | {"blessed": not reasons[1], "reasons": reasons[0]}


def _span(low: float, high: float) -> str:
    return f"{low:+.1%} .. {high:+.1%}"


def _reasons(decision: dict[str, Any], table: pd.DataFrame, rules: GateRules) -> tuple[list[str], bool]:
    """The reasons, and whether any of them refuses."""
    metric, level = rules.metric, f"{rules.confidence:.0%} interval"
    new, old = decision["overall"]["candidate"][metric], decision["overall"]["champion"][metric]
    low, high = decision["overall"]["interval"]
    refusals = []
    if not high <= -rules.margin:
        refusals.append(f"overall {metric} {new:.2f} vs champion {old:.2f} ({new / old - 1:+.1%}, {level} "
                        f"{_span(low, high)}): not better by the margin of {rules.margin:.0%} (the interval must "
                        f"lie at or below {-rules.margin:.0%})")  # fmt: skip
    for row in table[~table["ok"]].to_dict("records"):
        mine, theirs = row[f"candidate_{metric}"], row[f"champion_{metric}"]
        refusals.append(f"slice {row['slice']}={row['segment']}: {metric} {mine:.2f} vs {theirs:.2f} "
                        f"({row['change']:+.1%}, {level} {_span(row['low'], row['high'])}), over the tolerance of "
                        f"{rules.slice_tolerance:.0%} (the whole interval above it)")  # fmt: skip
    if refusals:
        return refusals, True
    return [f"overall {metric} {new:.2f} vs champion {old:.2f} ({new / old - 1:+.1%}, {level} {_span(low, high)}); "
            f"no slice worse by more than {rules.slice_tolerance:.0%} beyond its interval"], False  # fmt: skip


def format_decision(decision: dict[str, Any]) -> str:
    """The decision as a readable table (for `tiffin models show` and the stage's log)."""
    metric = decision["rules"]["metric"]
    verdict = "BLESSED" if decision["blessed"] else "NOT BLESSED"
    lines = [
        f"{verdict}: {decision['candidate']} vs champion {decision['champion'] or '(none)'} on "
        f"{decision['holdout']['rows']} rows, {decision['holdout']['start']} .. {decision['holdout']['end']}"
    ]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    level = f"{decision['bootstrap']['confidence']:.0%} interval" if "bootstrap" in decision else ""
    header = f"  {'slice':<12} {'segment':<14} {'rows':>6} {'candidate':>10} {'champion':>10} {'change':>8} {level:>18}"
    lines += ["", header.rstrip()]
    for row in decision["slices"]:
        champion = row.get(f"champion_{metric}")
        change = row.get("change")
        interval = _span(row["low"], row["high"]) if row.get("low") is not None else ""
        flag = "" if row.get("ok", True) else "  <- regressed"
        lines.append(f"  {row['slice']:<12} {row['segment']:<14} {row['rows']:>6} {row[f'candidate_{metric}']:>10.2f} "
                     f"{'' if champion is None else f'{champion:.2f}':>10} "
                     f"{'' if change is None else f'{change:+.1%}':>8} {interval:>18}".rstrip() + flag)  # fmt: skip
    return "\n".join(lines)
