"""The shared feature code, and the proof that leakage columns never reach the model."""

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import FeatureEncoder
from tiffin.modeling.pipeline import GroupMeanBaseline, build_pipeline


@pytest.fixture(scope="module")
def canonical(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    return Contract(bike_spec).validate(bike_raw.head(3000)).valid


def test_features_are_the_specs_and_never_the_leakage_columns(bike_spec: DatasetSpec) -> None:
    names = list(FeatureEncoder.from_spec(bike_spec).fit(None).get_feature_names_out())
    assert names[:5] == ["hr", "temp", "atemp", "hum", "windspeed"]
    assert {"dteday_year", "dteday_month", "dteday_dayofyear"} <= set(names)
    assert not {"casual", "registered", "cnt"} & set(names)


def test_categories_are_coded_from_the_contract_and_unknown_is_missing(bike_spec: DatasetSpec) -> None:
    encoder = FeatureEncoder.from_spec(bike_spec)
    frame = pd.DataFrame(
        {
            "hr": [1, 2],
            "temp": [1.0, 2.0],
            "atemp": [1.0, 2.0],
            "hum": [50.0, 60.0],
            "windspeed": [1.0, 2.0],
            "season": ["winter", "fall"],
            "holiday": ["No", "Yes"],
            "weekday": ["Mon", None],
            "workingday": ["Yes", "No"],
            "weathersit": ["Heavy Rain", "Tornado"],
            "dteday": pd.to_datetime(["2012-01-01", "2012-12-31"]),
        }
    )
    matrix = encoder.fit_transform(frame)
    columns = dict(zip(encoder.get_feature_names_out(), matrix.T, strict=True))
    np.testing.assert_array_equal(columns["season"], [0, 3])
    np.testing.assert_array_equal(columns["weathersit"], [3, np.nan])
    np.testing.assert_array_equal(columns["weekday"], [0, np.nan])
    np.testing.assert_array_equal(columns["dteday_dayofyear"], [1, 366])


def test_the_encoder_learns_nothing_from_data(bike_spec: DatasetSpec, canonical: pd.DataFrame) -> None:
    """Training and serving cannot disagree: the output does not depend on what it was fitted on."""
    a = FeatureEncoder.from_spec(bike_spec).fit(canonical.head(10)).transform(canonical.tail(50))
    b = FeatureEncoder.from_spec(bike_spec).fit(canonical).transform(canonical.tail(50))
    np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("rows", [1, 100, 3000])
def test_date_parts_are_the_same_whatever_form_the_dates_come_in(
    bike_spec: DatasetSpec, canonical: pd.DataFrame, rows: int
) -> None:
    """The contract's datetime64 column (read without `pd.to_datetime`), coarser units, text, a missing date and
    the API's arrays: the same matrix."""
    frame = canonical.head(rows).reset_index(drop=True)
    frame.loc[0, "dteday"] = pd.NaT
    encoder = FeatureEncoder.from_spec(bike_spec).fit(None)
    expected = encoder.transform(frame.assign(dteday=pd.to_datetime(frame["dteday"].astype(str), errors="coerce")))
    for dates in (
        frame["dteday"],
        frame["dteday"].astype("datetime64[s]"),
        frame["dteday"].dt.strftime("%Y-%m-%d"),
        frame["dteday"].to_numpy(),
    ):
        np.testing.assert_array_equal(encoder.transform(frame.assign(dteday=dates)), expected)
    as_arrays = {name: frame[name].to_numpy() for name in frame}  # the API's dict of columns
    np.testing.assert_array_equal(encoder.transform(as_arrays), expected)


def test_predictions_do_not_move_when_leakage_columns_change_or_vanish(
    bike_spec: DatasetSpec, canonical: pd.DataFrame
) -> None:
    pipeline = build_pipeline(bike_spec, {"max_iter": 20}).fit(canonical, canonical["cnt"])
    expected = pipeline.predict(canonical)
    scrambled = canonical.assign(casual=canonical["cnt"] * 7, registered=0)
    np.testing.assert_array_equal(pipeline.predict(scrambled), expected)
    np.testing.assert_array_equal(pipeline.predict(canonical.drop(columns=["casual", "registered", "cnt"])), expected)


def test_an_unknown_hyper_parameter_is_named(bike_spec: DatasetSpec) -> None:
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['max_iters'\]"):
        build_pipeline(bike_spec, {"max_iters": 10})


def test_baseline_is_the_group_mean_with_the_global_mean_for_unseen_groups() -> None:
    frame = pd.DataFrame({"hr": [1, 1, 2], "workingday": ["Yes", "Yes", "No"]})
    baseline = GroupMeanBaseline(("hr", "workingday")).fit(frame, [10, 20, 40])
    unseen = pd.DataFrame({"hr": [1, 2, 3], "workingday": ["Yes", "No", "Yes"]})
    np.testing.assert_allclose(baseline.predict(unseen), [15, 40, 70 / 3])
