"""The drift statistic (PSI): known values by hand, same vs shifted samples, categories, thresholds."""

from __future__ import annotations

from math import log

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.lifecycle.drift import PSI_EPSILON, categorical_psi, decile_edges, drift_table, numeric_psi, psi
from tiffin.lifecycle.monitoring import Thresholds, judge_window
from tiffin.storage.settings import load_params

from ..conftest import ROOT


def test_psi_of_two_bins_equals_the_hand_computed_value() -> None:
    # (0.25 - 0.5) ln(0.25 / 0.5) + (0.75 - 0.5) ln(0.75 / 0.5)
    assert psi([0.5, 0.5], [0.25, 0.75]) == pytest.approx(0.25 * log(2) + 0.25 * log(1.5))
    assert psi([0.5, 0.5], [0.5, 0.5]) == 0


def test_an_empty_bin_counts_as_epsilon_not_as_infinity() -> None:
    expected = (1 - 0.5) * log(1 / 0.5) + (PSI_EPSILON - 0.5) * log(PSI_EPSILON / 0.5)
    assert psi([0.5, 0.5], [1.0, 0.0]) == pytest.approx(expected)


def test_numeric_bins_are_the_reference_deciles_with_open_outer_bins() -> None:
    reference = pd.Series(np.arange(1, 11, dtype=float))  # one value per decile bin
    assert decile_edges(reference) == pytest.approx([1.9, 2.8, 3.7, 4.6, 5.5, 6.4, 7.3, 8.2, 9.1])
    # Half the window at or below the lowest edge, half beyond the highest (even far beyond it).
    current = pd.Series([1.0] * 5 + [1_000.0] * 5)
    by_hand = 2 * (0.5 - 0.1) * log(0.5 / 0.1) + 8 * (PSI_EPSILON - 0.1) * log(PSI_EPSILON / 0.1)
    assert numeric_psi(reference, current) == pytest.approx(by_hand)


def test_repeated_values_give_unique_edges() -> None:
    reference = pd.Series([0] * 80 + [1] * 20)
    assert decile_edges(reference) == pytest.approx([0.0, 0.2, 1.0])  # 0.8 quantile: between 0 and 1
    assert numeric_psi(reference, reference.sample(frac=1, random_state=1)) == pytest.approx(0)


def test_a_value_on_an_edge_stays_in_its_bin_after_the_logs_json_round_trip() -> None:
    # pandas reads "16.9979" from CSV as 16.997899999999998; the log's JSON (10 decimals) gives 16.9979.
    parsed = pd.Series(np.repeat([6.0032, 16.997899999999998, 26.0027], [30, 40, 30]))
    logged = pd.Series(np.repeat([6.0032, 16.9979, 26.0027], [30, 40, 30]))
    assert 16.9979 in decile_edges(parsed)  # the value is an edge itself
    assert numeric_psi(parsed, logged) == 0


def test_samples_of_one_distribution_barely_move_and_a_shifted_one_does() -> None:
    rng = np.random.default_rng(7)
    reference = pd.Series(rng.normal(20, 5, 20_000))
    same = pd.Series(rng.normal(20, 5, 5_000))
    shifted = pd.Series(rng.normal(25, 5, 5_000))  # one standard deviation warmer
    assert numeric_psi(reference, same) < 0.02
    assert numeric_psi(reference, shifted) > 0.5


def test_missing_numbers_are_a_bin_of_their_own() -> None:
    reference = pd.Series(np.arange(100, dtype=float))
    half_missing = pd.Series([*range(0, 100, 2), *[np.nan] * 50], dtype=float)
    assert numeric_psi(reference, reference) == 0
    assert numeric_psi(reference, half_missing) > 2


def test_categorical_psi_by_hand_with_an_unseen_category_and_missing_values() -> None:
    reference = pd.Series(["Clear", "Mist"] * 50)
    assert categorical_psi(reference, pd.Series(["Clear"] + ["Mist"] * 3)) == pytest.approx(
        0.25 * log(2) + 0.25 * log(1.5)
    )
    # A category training never saw: its reference share is epsilon, so it weighs heavily.
    unseen = pd.Series(["Clear", "Clear", "Mist", "Heavy Rain"])
    expected = (0.25 - 0.5) * log(0.25 / 0.5) + (0.25 - PSI_EPSILON) * log(0.25 / PSI_EPSILON)
    assert categorical_psi(reference, unseen) == pytest.approx(expected)
    # None and NaN are both "missing": one category, compared like any other.
    with_missing = pd.Series(["Clear", None] * 50, dtype=object)
    window = pd.Series(["Clear", "Clear", "Clear", np.nan], dtype=object)
    assert categorical_psi(with_missing, window) == pytest.approx(0.25 * log(1.5) + 0.25 * log(2))


def test_an_empty_window_has_unknown_drift_not_zero() -> None:
    assert np.isnan(numeric_psi(pd.Series([1.0, 2.0]), pd.Series([], dtype=float)))
    assert np.isnan(categorical_psi(pd.Series(["a"]), pd.Series([], dtype=object)))


@pytest.fixture(scope="module")
def canonical(bike_spec, bike_raw) -> pd.DataFrame:
    valid = Contract(bike_spec).validate(bike_raw).valid
    return valid[valid["dteday"] < "2012-01-01"].reset_index(drop=True)


def test_real_rows_split_at_random_do_not_drift_and_shifted_ones_do(bike_spec, canonical) -> None:
    reference = canonical.sample(frac=0.5, random_state=0)
    unchanged = canonical.drop(index=reference.index)
    table = drift_table(reference, unchanged, bike_spec, 0.2).set_index("feature")
    assert set(table.index) == {*bike_spec.features.numeric, *bike_spec.features.categorical}
    assert not table["drifted"].any(), table
    assert table["psi"].max() < 0.05

    shifted = unchanged.assign(temp=unchanged["temp"] + 8, hum=unchanged["hum"] * 0.6, weathersit="Light Rain")
    table = drift_table(reference, shifted, bike_spec, 0.2).set_index("feature")
    assert sorted(table.index[table["drifted"]]) == ["hum", "temp", "weathersit"]


def test_thresholds_come_from_params_yaml_and_unknown_keys_are_refused() -> None:
    params = load_params(ROOT / "params.yaml")
    assert Thresholds.from_params(params["monitor"]) == Thresholds(**params["monitor"])
    assert Thresholds.from_params(None) == Thresholds()
    with pytest.raises(ValueError, match="max_psi"):
        Thresholds.from_params({"max_psi": 0.1})


def _no_truth() -> pd.DataFrame:
    return pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype=float)})


def _logged(frame: pd.DataFrame, spec, predictions: np.ndarray) -> pd.DataFrame:
    return frame.assign(
        model="m:1",
        role="champion",
        row_key=[f"[{i}]" for i in range(len(frame))],
        event_time=spec.event_time(frame),
        prediction=predictions,
    )


def test_too_few_rows_are_reported_but_not_judged(bike_spec, canonical) -> None:
    reference = canonical.assign(prediction=canonical["cnt"].astype(float))
    few = canonical.head(50).assign(temp=45.0)
    window = dict(model="m:1", start="2011-01-01", end="2011-12-31", test_mae=10.0)
    result = judge_window(reference, _logged(few, bike_spec, np.full(50, 900.0)), _no_truth(), bike_spec,
                      thresholds=Thresholds(min_rows=100), **window)  # fmt: skip
    assert "temp" in result.drifted_features and result.prediction_psi > 1
    assert result.crossed == [] and result.exit_code == 0
    assert "not judged" in result.checks[0].note
    judged = judge_window(reference, _logged(few, bike_spec, np.full(50, 900.0)), _no_truth(), bike_spec,
                      thresholds=Thresholds(min_rows=10, max_drifted_features=0), **window)  # fmt: skip
    assert judged.crossed == ["drifted_features", "prediction_psi"] and judged.exit_code == 4
    assert judged.checks[2].note == "no actuals in the window yet"


def test_history_features_are_watched_for_drift_too() -> None:
    """Issue 15: they are logged with each prediction, so a history model's lags drift like any input."""
    from tiffin.core.spec import load_spec

    spec = load_spec(ROOT / "specs/bike_sharing.yaml")
    rng = np.random.default_rng(0)
    names = [*spec.features.numeric, *spec.history.names()]
    reference = pd.DataFrame({name: rng.gamma(2.0, 50.0, 2_000) for name in names})
    reference = reference.assign(**{name: "No" for name in spec.features.categorical})
    current = reference.assign(cnt_lag_1h=reference["cnt_lag_1h"] * 3)  # demand an hour ago tripled
    table = drift_table(reference, current, spec, threshold=0.2).set_index("feature")
    assert set(spec.history.names()) <= set(table.index)
    assert table.loc["cnt_lag_1h", "drifted"] and not table.loc["cnt_lag_24h", "drifted"]
