"""The promotion gate: whether a candidate may replace the champion (the state itself: `storage.champion`).

The gate works as TFX's Evaluator blesses a model: the candidate and the current champion score the
same, latest holdout; the candidate is promoted only if it beats the champion overall by a margin
and regresses no slice by more than a tolerance. The first model is promoted without a baseline.
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


def decide(
    spec: DatasetSpec,
    holdout: pd.DataFrame,
    candidate: tuple[str, np.ndarray],
    champion: tuple[str, np.ndarray] | None,
    rules: GateRules,
) -> dict[str, Any]:
    """Bless the candidate or not; the decision with its numbers, overall and per slice."""
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
    ours = slice_errors(spec, holdout, candidate_predicted, rules.metric)
    if champion is None:
        decision["slices"] = ours.rename(columns={"error": f"candidate_{rules.metric}"}).to_dict("records")
        return decision | {"blessed": True, "reasons": ["first model: promoted without a baseline"]}

    decision["overall"]["champion"] = regression_metrics(actual, champion[1])
    new, old = decision["overall"]["candidate"][rules.metric], decision["overall"]["champion"][rules.metric]
    decision["overall"]["change"] = round(new / old - 1, 4)
    theirs = slice_errors(spec, holdout, champion[1], rules.metric)
    table = ours.rename(columns={"error": f"candidate_{rules.metric}"})
    table[f"champion_{rules.metric}"] = theirs["error"].to_numpy()
    table["change"] = (table[f"candidate_{rules.metric}"] / table[f"champion_{rules.metric}"] - 1).round(4)
    judged = table["rows"] >= rules.min_slice_rows
    table["ok"] = ~judged | (table["change"] <= rules.slice_tolerance)
    decision["slices"] = table.to_dict("records")

    reasons = []
    if new > old * (1 - rules.margin):
        reasons.append(f"overall {rules.metric} {new:.2f} vs champion {old:.2f} ({new / old - 1:+.1%}): "
                       f"not better by the margin of {rules.margin:.0%}")  # fmt: skip
    for row in table[~table["ok"]].to_dict("records"):
        mine, theirs_error = row[f"candidate_{rules.metric}"], row[f"champion_{rules.metric}"]
        reasons.append(f"slice {row['slice']}={row['segment']}: {rules.metric} {mine:.2f} vs {theirs_error:.2f} "
                       f"({row['change']:+.1%}), over the tolerance of {rules.slice_tolerance:.0%}")  # fmt: skip
    if not reasons:
        reasons.append(f"overall {rules.metric} {new:.2f} vs champion {old:.2f} ({new / old - 1:+.1%}); "
                       f"no slice worse by more than {rules.slice_tolerance:.0%}")  # fmt: skip
        return decision | {"blessed": True, "reasons": reasons}
    return decision | {"blessed": False, "reasons": reasons}


def format_decision(decision: dict[str, Any]) -> str:
    """The decision as a readable table (for `tiffin models show` and the stage's log)."""
    metric = decision["rules"]["metric"]
    verdict = "BLESSED" if decision["blessed"] else "NOT BLESSED"
    lines = [
        f"{verdict}: {decision['candidate']} vs champion {decision['champion'] or '(none)'} on "
        f"{decision['holdout']['rows']} rows, {decision['holdout']['start']} .. {decision['holdout']['end']}"
    ]
    lines += [f"  - {reason}" for reason in decision["reasons"]]
    header = f"  {'slice':<12} {'segment':<14} {'rows':>6} {'candidate':>10} {'champion':>10} {'change':>8}"
    lines += ["", header]
    for row in decision["slices"]:
        champion = row.get(f"champion_{metric}")
        change = row.get("change")
        flag = "" if row.get("ok", True) else "  <- regressed"
        lines.append(f"  {row['slice']:<12} {row['segment']:<14} {row['rows']:>6} {row[f'candidate_{metric}']:>10.2f} "
                     f"{'' if champion is None else f'{champion:.2f}':>10} "
                     f"{'' if change is None else f'{change:+.1%}':>8}{flag}")  # fmt: skip
    return "\n".join(lines)
