"""The gate's block bootstrap, calibrated on resampled real holdouts.

Each trial resamples the days of the real 2012-10-01 .. 12-31 holdout (92 days, 2,168 hours; a drawn day gets
a date of its own) and draws two models' errors on it: an error common to both (a share of it per day, as a
day's weather misleads both models alike) plus each model's own, the two correlated about 0.9 as two models
trained on the same data are. The error grows with demand. An equally good candidate must be refused as "not
better" and never flagged as a regression; one 15 % worse on a slice of >= 500 rows must be refused for it.
The point-estimate rule the gate had before is measured on the same trials, to show these tests can fail.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.lifecycle.promotion import GateRules, bootstrap_changes, decide, format_decision

RULES = GateRules(margin=0.02, slice_tolerance=0.10, min_slice_rows=50, confidence=0.95, bootstrap_samples=1000)
TRIALS = 200
OWN_ERROR = 0.35  # each model's own error, against a common error of sd 1 per hour and 0.5 per day


@pytest.fixture(scope="module")
def holdout(bike_spec, bike_raw) -> pd.DataFrame:
    valid = Contract(bike_spec).validate(bike_raw).valid
    return valid[valid["dteday"] >= "2012-10-01"].reset_index(drop=True)


class Trials:
    """Resampled holdouts with two models' predictions on them, from one seeded generator."""

    def __init__(self, holdout: pd.DataFrame, seed: int) -> None:
        self.holdout, self.rng = holdout, np.random.default_rng(seed)
        self.day_rows = [np.flatnonzero(holdout["dteday"] == day) for day in sorted(holdout["dteday"].unique())]

    def resampled(self) -> tuple[pd.DataFrame, np.ndarray]:
        """The holdout's days drawn with replacement, each drawn day a day of its own; and each row's day."""
        picks = self.rng.integers(0, len(self.day_rows), len(self.day_rows))
        rows = np.concatenate([self.day_rows[p] for p in picks])
        day = np.repeat(np.arange(len(picks)), [len(self.day_rows[p]) for p in picks])
        frame = self.holdout.iloc[rows].reset_index(drop=True)
        frame["dteday"] = pd.Timestamp("2030-01-01") + pd.to_timedelta(day, unit="D")
        return frame, day

    def errors(self, frame: pd.DataFrame, day: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(champion's errors, an equally good candidate's errors)."""
        scale = 0.2 * frame["cnt"].to_numpy(dtype="float64") + 5
        common = scale * (self.rng.normal(0, 0.5, day.max() + 1)[day] + self.rng.normal(0, 1, len(day)))
        own = scale * OWN_ERROR * self.rng.normal(size=(2, len(day)))
        return common + own[0], common + own[1]


def regressed(decision: dict) -> list[str]:
    return [f"{row['slice']}={row['segment']}" for row in decision["slices"] if not row["ok"]]


def point_rule(decision: dict) -> tuple[bool, list[str]]:
    """What the gate decided before the bootstrap: promoted on the point change, a slice refused on its own."""
    slices = [f"{row['slice']}={row['segment']}" for row in decision["slices"]
              if row["rows"] >= RULES.min_slice_rows and row["change"] > RULES.slice_tolerance]  # fmt: skip
    return decision["overall"]["change"] <= -RULES.margin and not slices, slices


def test_an_equally_good_candidate_is_refused_as_not_better_and_never_as_a_regression(bike_spec, holdout):
    trials, right, point_wrong = Trials(holdout, seed=17), 0, 0
    for _ in range(TRIALS):
        frame, day = trials.resampled()
        actual = frame["cnt"].to_numpy(dtype="float64")
        champion, candidate = trials.errors(frame, day)
        decision = decide(bike_spec, frame, ("m:new", actual + candidate), ("m:old", actual + champion), RULES)
        right += (not decision["blessed"] and not regressed(decision)
                  and "not better by the margin" in decision["reasons"][0])  # fmt: skip
        promoted, slices = point_rule(decision)
        point_wrong += promoted or bool(slices)
    assert right >= 0.95 * TRIALS, f"{right} of {TRIALS}"
    assert point_wrong > 0.10 * TRIALS, f"the point rule erred in only {point_wrong}: the trials are too easy"


def test_a_real_15_percent_regression_on_a_500_row_slice_is_refused(bike_spec, holdout):
    """Better by 25 % everywhere else (well past the margin overall), 15 % worse midday (543 of the hours)."""
    trials, refused = Trials(holdout, seed=18), 0
    for _ in range(TRIALS):
        frame, day = trials.resampled()
        actual = frame["cnt"].to_numpy(dtype="float64")
        champion, candidate = trials.errors(frame, day)
        midday = frame["hr"].between(10, 15).to_numpy()
        candidate = np.where(midday, 1.15, 0.75) * candidate
        decision = decide(bike_spec, frame, ("m:new", actual + candidate), ("m:old", actual + champion), RULES)
        assert decision["overall"]["interval"][1] <= -RULES.margin  # better overall: only the slice can refuse
        refused += not decision["blessed"] and regressed(decision) == ["hour_band=midday"]
    assert refused >= 0.95 * TRIALS, f"{refused} of {TRIALS}"


def test_an_identical_candidate_is_never_promoted_nor_regressed(bike_spec, holdout):
    predicted = holdout["cnt"].to_numpy(dtype="float64") * 1.1 + 7
    decision = decide(bike_spec, holdout, ("m:new", predicted), ("m:old", predicted), RULES)
    assert not decision["blessed"] and not regressed(decision)
    assert decision["overall"]["interval"] == [0.0, 0.0]


def test_the_vectorised_bootstrap_equals_resampling_days_one_by_one():
    rng = np.random.default_rng(3)
    days = np.repeat(np.arange(6), [3, 5, 2, 4, 4, 6])
    groups = np.stack([np.ones(len(days), dtype=bool), rng.random(len(days)) < 0.5])
    ours, theirs = rng.gamma(2, 10, len(days)), rng.gamma(2, 10, len(days))
    for metric in ("mae", "rmse"):
        fast = bootstrap_changes(days, groups, ours, theirs, metric, samples=50, seed=9)
        picks = np.random.default_rng(9).integers(0, 6, size=(50, 6))
        for b in range(50):
            rows = np.concatenate([np.flatnonzero(days == d) for d in picks[b]])
            for g, mask in enumerate(groups):
                chosen = rows[mask[rows]]
                if not len(chosen):  # no row of the group among the drawn days: no estimate
                    assert np.isnan(fast[b, g])
                    continue
                error = np.array([ours[chosen].mean(), theirs[chosen].mean()])
                error = np.sqrt(error) if metric == "rmse" else error
                assert fast[b, g] == pytest.approx(error[0] / error[1] - 1)


def test_the_decision_records_its_intervals_readably_and_repeatably(bike_spec, holdout):
    trials = Trials(holdout, seed=5)
    frame, day = trials.resampled()
    actual = frame["cnt"].to_numpy(dtype="float64")
    champion, candidate = trials.errors(frame, day)
    decision = decide(bike_spec, frame, ("m:new", actual + 0.8 * candidate), ("m:old", actual + champion), RULES)
    assert decision == decide(bike_spec, frame, ("m:new", actual + 0.8 * candidate), ("m:old", actual + champion),
                              RULES)  # the same seed, the same decision  # fmt: skip
    expected = {"days": 92, "samples": 1000, "seed": 0, "confidence": 0.95, "slice_confidence": round(1 - 0.05 / 13, 4)}
    assert decision["bootstrap"] | {"overall": None} == expected | {"overall": None}
    low, high = decision["overall"]["interval"]
    assert low < decision["overall"]["change"] < high < 0
    assert all(row["low"] <= row["change"] <= row["high"] for row in decision["slices"])
    assert json.loads(json.dumps(decision)) == decision  # what eval/blessing.json and the UI read
    text = format_decision(decision)
    assert "95% interval" in text and f"{low:+.1%} .. {high:+.1%}" in decision["reasons"][0]
