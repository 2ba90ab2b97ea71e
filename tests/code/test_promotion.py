"""The promotion gate's rules and the champion state's promote/rollback, on real holdout rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.lifecycle.promotion import ChampionState, GateRules, decide, format_decision
from tiffin.storage.champion import all_states

RULES = GateRules(margin=0.02, slice_tolerance=0.10, min_slice_rows=50)


@pytest.fixture(scope="module")
def holdout(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    valid = Contract(bike_spec).validate(bike_raw).valid
    return valid[valid["dteday"] >= "2012-10-01"].reset_index(drop=True)


def with_error(holdout: pd.DataFrame, size: float, seed: int) -> np.ndarray:
    """Predictions off the actual demand by `size` on average (a random sign per row)."""
    signs = np.random.default_rng(seed).choice([-1.0, 1.0], len(holdout))
    return holdout["cnt"].to_numpy(dtype="float64") + signs * size


def test_a_candidate_better_everywhere_is_blessed(bike_spec, holdout):
    decision = decide(bike_spec, holdout, ("m:new", with_error(holdout, 30, 1)), ("m:old", with_error(holdout, 40, 2)),
                      RULES)  # fmt: skip
    assert decision["blessed"], decision["reasons"]
    assert decision["overall"]["candidate"]["mae"] == pytest.approx(30)
    assert decision["overall"]["change"] == pytest.approx(-0.25)
    assert all(row["ok"] for row in decision["slices"])
    assert "BLESSED" in format_decision(decision)


def test_a_candidate_worse_overall_is_refused(bike_spec, holdout):
    decision = decide(bike_spec, holdout, ("m:new", with_error(holdout, 41, 1)), ("m:old", with_error(holdout, 40, 2)),
                      RULES)  # fmt: skip
    assert not decision["blessed"]
    assert "not better by the margin" in decision["reasons"][0]


def test_a_candidate_within_the_margin_is_refused(bike_spec, holdout):
    """1 % better is not the 2 % the rules ask for."""
    decision = decide(bike_spec, holdout, ("m:new", with_error(holdout, 39.6, 1)),
                      ("m:old", with_error(holdout, 40, 2)), RULES)  # fmt: skip
    assert not decision["blessed"]


def test_a_candidate_better_overall_but_worse_on_one_slice_is_refused(bike_spec, holdout):
    rainy = (holdout["weathersit"] == "Light Rain").to_numpy()
    errors = np.where(rainy, 60.0, 25.0)  # much better in general, 50 % worse when it rains
    candidate = holdout["cnt"].to_numpy(dtype="float64") + errors
    decision = decide(bike_spec, holdout, ("m:new", candidate), ("m:old", with_error(holdout, 40, 2)), RULES)
    assert decision["overall"]["candidate"]["mae"] < 0.98 * decision["overall"]["champion"]["mae"]
    assert not decision["blessed"]
    failed = [row for row in decision["slices"] if not row["ok"]]
    assert [(row["slice"], row["segment"]) for row in failed] == [("weathersit", "Light Rain")]
    assert failed[0]["change"] == pytest.approx(0.5)
    assert "slice weathersit=Light Rain" in decision["reasons"][0]
    assert "<- regressed" in format_decision(decision)


def test_small_slices_are_reported_but_not_judged(bike_spec, holdout):
    rules = GateRules(min_slice_rows=10_000)
    rainy = (holdout["weathersit"] == "Light Rain").to_numpy()
    candidate = holdout["cnt"].to_numpy() + np.where(rainy, 60.0, 25.0)
    decision = decide(bike_spec, holdout, ("m:new", candidate), ("m:old", with_error(holdout, 40, 2)), rules)
    assert decision["blessed"]


def test_the_first_model_is_promoted_without_a_baseline(bike_spec, holdout):
    decision = decide(bike_spec, holdout, ("m:first", with_error(holdout, 80, 1)), None, RULES)
    assert decision["blessed"]
    assert decision["champion"] is None
    assert decision["reasons"] == ["first model: promoted without a baseline"]
    assert {row["slice"] for row in decision["slices"]} == {s.title for s in bike_spec.evaluation.slices}


def test_promote_and_rollback_walk_the_champion_lineage(tmp_path):
    path = tmp_path / "champion.json"
    state = ChampionState()
    state.promote("m:1", by="test", reason="first")
    state.promote("m:2", by="test", reason="better")
    state.set_challenger("m:3", by="test", reason="shadow")
    state.promote("m:3", by="test", reason="better again")
    assert state.challenger is None  # promoted, it is no longer a challenger
    state.save(path)

    state = ChampionState.load(path, dataset="m")
    assert state.rollback(by="test", reason="bad in production") == "m:2"
    assert state.champion == "m:2"
    assert state.rolled_back("m:3")["reason"] == "bad in production"
    assert state.rollback(by="test", reason="again") == "m:1"
    with pytest.raises(LookupError, match="no earlier champion"):
        state.rollback(by="test", reason="nothing left")
    state.promote("m:3", by="test", reason="fixed")
    assert state.rolled_back("m:3") is None
    assert state.previous_champion() == "m:1"
    with pytest.raises(ValueError, match="already the champion"):
        state.promote("m:3", by="test", reason="twice")


def test_each_dataset_keeps_its_own_champion_and_a_rollback_never_crosses_datasets(tmp_path):
    """Friction 1 of issue 14: another dataset's champion file in place, a new dataset's first model."""
    path = tmp_path / "champion.json"
    example = ChampionState()
    example.promote("bike_demand:1", by="test", reason="first")
    example.save(path)

    sensors = ChampionState.load(path, dataset="sensor_counts")
    assert sensors.champion is None and sensors.history == []  # a first model here, whatever the file holds
    sensors.promote("sensor_counts:a", by="test", reason="first")
    sensors.save(path)
    with pytest.raises(LookupError, match="no earlier champion"):
        ChampionState.load(path, dataset="sensor_counts").rollback(by="test", reason="oops")
    with pytest.raises(ValueError, match="dataset 'bike_demand', not of 'sensor_counts'"):
        ChampionState.load(path, dataset="sensor_counts").promote("bike_demand:1", by="test", reason="cross")

    assert ChampionState.load(path, dataset="bike_demand").champion == "bike_demand:1"
    assert [(s.dataset, s.champion) for s in all_states(path)] == [
        ("bike_demand", "bike_demand:1"),
        ("sensor_counts", "sensor_counts:a"),
    ]


def test_a_champion_file_from_before_datasets_is_read_as_its_models_dataset(tmp_path):
    path = tmp_path / "champion.json"
    path.write_text(
        json.dumps(
            {
                "champion": "bike_demand:1",
                "challenger": None,
                "history": [
                    {
                        "event": "promote",
                        "tag": "bike_demand:1",
                        "previous": None,
                        "at": "2026-01-01",
                        "by": "t",
                        "reason": "r",
                    }
                ],
            }
        )
    )
    assert ChampionState.load(path, dataset="bike_demand").champion == "bike_demand:1"
    assert ChampionState.load(path, dataset="other").champion is None
    ChampionState.load(path, dataset="other").promote("other:1", by="t", reason="r")
    state = ChampionState.load(path, dataset="bike_demand")
    state.set_challenger("bike_demand:2", by="t", reason="r")
    state.save(path)
    assert list(json.loads(path.read_text())["datasets"]) == ["bike_demand"]
