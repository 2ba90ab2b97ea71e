"""Which model serves: the champion, an optional challenger, and the gate a candidate must pass.

The state is a small JSON file in git, `models/champion.json`: the champion's and challenger's tags
and the history of every promotion and rollback, each with its reason and (for a gated promotion)
the decision with its numbers. Git history is the audit trail, a pull request is the review, and no
registry server is needed: the models themselves stay in the BentoML store.

The gate works as TFX's Evaluator blesses a model: the candidate and the current champion score the
same, latest holdout; the candidate is promoted only if it beats the champion overall by a margin
and regresses no slice by more than a tolerance. The first model is promoted without a baseline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tiffin import settings
from tiffin.evaluation import regression_metrics, segment_masks
from tiffin.spec import DatasetSpec

PROMOTE, ROLLBACK, CHALLENGER = "promote", "rollback", "challenger"


@dataclass(frozen=True)
class GateRules:
    """params.yaml `bless:`: how much better overall, how much worse per slice at most."""

    metric: str = "mae"
    margin: float = 0.02  # the candidate's error must be at most (1 - margin) x the champion's
    slice_tolerance: float = 0.10  # no slice's error may grow by more than this share
    min_slice_rows: int = 50  # smaller segments are reported, not judged

    @classmethod
    def from_params(cls, params: dict[str, Any] | None) -> GateRules:
        return cls(**(params or {}))


@dataclass
class ChampionState:
    champion: str | None = None
    challenger: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    # -- file ------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None) -> ChampionState:
        path = path or settings.champion_file()
        if path is None or not path.exists():
            return cls()
        return cls(**json.loads(path.read_text()))

    def save(self, path: Path | None = None) -> Path:
        path = path or settings.champion_file() or settings.CHAMPION
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
        return path

    # -- changes ---------------------------------------------------------------------------------

    def promote(self, tag: str, *, by: str, reason: str, decision: dict | None = None, at: str | None = None) -> None:
        if tag == self.champion:
            raise ValueError(f"{tag} is already the champion")
        self.history.append(_event(PROMOTE, tag, self.champion, by, reason, at, decision))
        self.champion = tag
        if self.challenger == tag:
            self.challenger = None

    def rollback(self, *, by: str, reason: str, at: str | None = None) -> str:
        """Make the champion's predecessor champion again; returns its tag."""
        previous = self.previous_champion()
        if previous is None:
            raise LookupError(f"{self.champion or 'no model'} has no earlier champion to roll back to")
        self.history.append(_event(ROLLBACK, previous, self.champion, by, reason, at, None))
        self.champion = previous
        return previous

    def set_challenger(self, tag: str | None, *, by: str, reason: str, at: str | None = None) -> None:
        if tag is not None and tag == self.champion:
            raise ValueError(f"{tag} is the champion; a challenger is another model")
        self.history.append(_event(CHALLENGER, tag, self.challenger, by, reason, at, None))
        self.challenger = tag

    # -- questions -------------------------------------------------------------------------------

    def lineage(self) -> list[str]:
        """Champions in order, as a stack: a promotion pushes, a rollback pops back to the one before."""
        stack: list[str] = []
        for event in self.history:
            if event["event"] == PROMOTE:
                stack.append(event["tag"])
            elif event["event"] == ROLLBACK:
                stack.pop()
        return stack

    def previous_champion(self) -> str | None:
        stack = self.lineage()
        return stack[-2] if len(stack) >= 2 else None

    def rolled_back(self, tag: str) -> dict | None:
        """The rollback that removed `tag`, unless it was promoted again since."""
        for event in reversed(self.history):
            if event["event"] == PROMOTE and event["tag"] == tag:
                return None
            if event["event"] == ROLLBACK and event["previous"] == tag:
                return event
        return None

    def decision_for(self, tag: str) -> dict | None:
        """The gate's decision recorded when `tag` was promoted, if it was promoted by the gate."""
        for event in reversed(self.history):
            if event["event"] == PROMOTE and event["tag"] == tag and event.get("decision"):
                return event["decision"]
        return None

    def role_of(self, tag: str) -> str | None:
        return "champion" if tag == self.champion else "challenger" if tag == self.challenger else None


def _event(kind: str, tag: str | None, previous: str | None, by: str, reason: str, at: str | None,
           decision: dict | None) -> dict[str, Any]:  # fmt: skip
    from tiffin.predlog import iso_now

    event = {"event": kind, "tag": tag, "previous": previous, "at": at or iso_now(), "by": by, "reason": reason}
    if decision is not None:
        event["decision"] = decision
    return event


# -- the gate ------------------------------------------------------------------------------------


def slice_errors(spec: DatasetSpec, holdout: pd.DataFrame, predicted: np.ndarray, metric: str) -> pd.DataFrame:
    """Error per (slice, segment) of one model on the holdout."""
    actual = holdout[spec.target].to_numpy(dtype="float64")
    rows = [{"slice": title, "segment": segment, "rows": int(mask.sum()),
             "error": regression_metrics(actual[mask], predicted[mask])[metric]}
            for title, segment, mask in segment_masks(holdout, spec.evaluation.slices)]  # fmt: skip
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
        "rules": asdict(rules),
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
