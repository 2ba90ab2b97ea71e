"""History features (issue 15, first part): the spec's leakage guard, and point-in-time values equal to a
brute-force reading of the rows, with gaps, several series and values that arrive later."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from tiffin.core.spec import DatasetSpec, HistorySpec, duration
from tiffin.features.history import history_features

SERIES = ["a", "b", "c"]


def sensor_spec(history: dict) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "name": "sensors", "source": {"table": "counts", "window_column": "at"}, "key": ["at", "sensor"],
        "timestamp": {"column": "at"}, "target": "count", "series": ["sensor"], "never_features": ["after"],
        "columns": {"at": {"type": "datetime"}, "sensor": {"type": "category", "values": SERIES},
                    "level": {"type": "float"}, "count": {"type": "int", "min": 0}, "after": {"type": "float"}},
        "features": {"numeric": ["level"], "categorical": ["sensor"]},
        "evaluation": {"baseline_group_by": ["sensor"]}, "history": history,
    })  # fmt: skip


HISTORY = {"horizon": "2h", "features": [{"column": "count", "lags": ["2h", "3h", "24h"],
                                          "rolling": [{"window": "6h", "agg": ["mean", "max", "sum"]}]}]}  # fmt: skip


def brute_force(spec: DatasetSpec, rows: pd.DataFrame, point: pd.Series) -> dict[str, float]:
    """Each feature read the slow, obvious way: the rows of the point's series, at or before t - horizon."""
    horizon = duration(spec.history.horizon)
    mine = rows[(rows["sensor"] == point["sensor"]) & rows["count"].notna()]
    found = {}
    for feature in spec.history.features:
        for lag in feature.lags:
            at = mine.loc[mine["at"] == point["at"] - duration(lag), feature.column]
            found[f"{feature.column}_lag_{lag}"] = float(at.iloc[0]) if len(at) else np.nan
        for rolling in feature.rolling:
            end = point["at"] - horizon
            inside = mine.loc[(mine["at"] > end - duration(rolling.window)) & (mine["at"] <= end), feature.column]
            for agg in rolling.agg:
                found[f"{feature.column}_{agg}_{rolling.window}"] = (
                    float(getattr(inside.astype("float64"), agg)()) if len(inside) else np.nan
                )
    return found


@st.composite
def histories(draw: st.DrawFn) -> pd.DataFrame:
    """A few days of hourly rows for three series, with gaps, missing values and rows in any order."""
    hours = draw(st.integers(10, 80))
    present = draw(st.lists(st.booleans(), min_size=hours * 3, max_size=hours * 3))
    values = draw(st.lists(st.one_of(st.none(), st.integers(0, 500)), min_size=hours * 3, max_size=hours * 3))
    start = pd.Timestamp("2024-03-01")
    rows = pd.DataFrame({
        "at": [start + pd.Timedelta(hours=h) for h in range(hours) for _ in SERIES],
        "sensor": SERIES * hours,
        "count": pd.array(values, dtype="Int64"),
        "level": 1.0,
    })[present]  # fmt: skip
    return rows.sample(frac=1, random_state=draw(st.integers(0, 10))) if len(rows) else rows


@settings(max_examples=60, deadline=None)
@given(rows=histories())
def test_each_value_is_what_a_brute_force_reading_of_the_past_finds(rows: pd.DataFrame) -> None:
    spec = sensor_spec(HISTORY)
    if rows.empty:
        return
    features = history_features(spec, rows)
    for index, point in rows.iterrows():
        expected = brute_force(spec, rows, point)
        got = features.loc[index].to_dict()
        assert got == pytest.approx(expected, nan_ok=True), (point.to_dict(), got, expected)


def test_a_later_actual_moves_no_feature_within_the_horizon() -> None:
    """The no-leakage proof: change every value after t - horizon; nothing known at t changes."""
    spec = sensor_spec(HISTORY)
    hours = pd.date_range("2024-03-01", periods=72, freq="h")
    rows = pd.DataFrame({"at": np.repeat(hours, 3), "sensor": SERIES * 72, "count": np.arange(216) % 17, "level": 1.0})
    point = rows.iloc[[150]]
    before = history_features(spec, rows, point)
    later = rows["at"] > point["at"].iloc[0] - duration("2h")
    changed = rows.assign(count=rows["count"].where(~later, 10_000))
    assert history_features(spec, changed, point).equals(before)
    # ... while the last value known (exactly t - horizon) is read.
    edge = rows["at"] == point["at"].iloc[0] - duration("2h")
    moved = history_features(spec, rows.assign(count=rows["count"].where(~edge, 10_000)), point)
    assert moved["count_lag_2h"].iloc[0] == 10_000 and not moved.equals(before)


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ({"horizon": "2h", "features": [{"column": "count", "lags": ["1h"]}]}, "shorter than the horizon"),
        ({"horizon": "1h", "features": [{"column": "after", "lags": ["1h"]}]}, "never_features"),
        ({"horizon": "1h", "features": [{"column": "sensor", "lags": ["1h"]}]}, "only numeric"),
        ({"horizon": "90min", "features": [{"column": "count", "lags": ["2h"]}]}, "whole number of steps"),
        ({"horizon": "1h", "features": [{"column": "count", "lags": ["soon"]}]}, "no duration"),
    ],
)
def test_the_spec_refuses_history_that_could_see_the_future_or_a_never_feature(history: dict, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        sensor_spec(history)


def test_feature_names_say_what_they_read() -> None:
    assert HistorySpec.model_validate(HISTORY).names() == [
        "count_lag_2h", "count_lag_3h", "count_lag_24h", "count_mean_6h", "count_max_6h", "count_sum_6h",
    ]  # fmt: skip


def test_a_cache_of_the_last_days_gives_the_same_bits_as_the_whole_history() -> None:
    """What makes an online lookup identical to training: a value depends on its window's values alone."""
    rolling = [{"window": "6h", "agg": ["mean", "std", "sum"]}]
    spec = sensor_spec(HISTORY | {"features": [{"column": "count", "lags": ["2h", "24h"], "rolling": rolling}]})
    rng = np.random.default_rng(3)
    hours = pd.date_range("2024-03-01", periods=24 * 40, freq="h")
    rows = pd.DataFrame({"at": np.repeat(hours, 3), "sensor": SERIES * len(hours), "level": 1.0,
                         "count": rng.gamma(2.0, 37.3, len(hours) * 3)})  # fmt: skip
    future = pd.DataFrame({"at": [hours[-1] + pd.Timedelta(hours=h) for h in (1, 2, 1)], "sensor": ["a", "a", "c"]})
    points = pd.concat([rows.tail(300), future], ignore_index=True)
    recent = rows[rows["at"] >= points["at"].min() - pd.Timedelta(hours=24)]  # the longest reach: the 24 h lag
    whole, cached = history_features(spec, rows, points), history_features(spec, recent, points)
    assert whole.equals(cached)
    assert whole.iloc[-3:].notna().all().all()  # the next hours, not yet rows, read the last ones known


@st.composite
def stored_and_points(draw: st.DrawFn) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rows of a feature table (event times as its text; one of them not its spelling of a time at the second, as
    something else might write) and points to look up in it: hours with a fraction of a second, series it does not
    hold, hours it does not hold, no time at all; under an index of their own."""
    hours = draw(st.lists(st.integers(0, 30), min_size=1, max_size=25, unique=True))
    start = pd.Timestamp("1969-12-30")  # before 1970 too: a moment's floor to the second is not its truncation
    texts = [(start + pd.Timedelta(hours=h)).strftime("%Y-%m-%dT%H:%M:%S") for h in hours]
    # Not the table's spelling: a parse alone takes the last two ('1:00:00' as 01:00, ':60' as the next minute).
    broken = draw(st.sampled_from(["", "2024-13-01T00:00:00", "1969-12-30 01:00:00", "1969-12-30T01:00:00.5",
                                   "1969-12-30T1:00:00", "1969-12-30T00:59:60"]))  # fmt: skip
    stored = pd.DataFrame({"sensor": [draw(st.sampled_from(SERIES)) for _ in hours] + ["a"],
                           "event_time": [*texts, broken],
                           "count_lag_2h": np.arange(len(hours) + 1, dtype="float64")})  # fmt: skip
    count = draw(st.integers(0, 20))
    moments = [start + pd.Timedelta(hours=draw(st.integers(0, 31)), milliseconds=draw(st.sampled_from([0, 1, 999])))
               if draw(st.integers(0, 9)) else pd.NaT for _ in range(count)]  # fmt: skip
    sensors = [draw(st.sampled_from([*SERIES, "d"])) for _ in range(count)]
    # And always the point that the texts which are not the table's spelling would be read as.
    points = pd.DataFrame({"at": [*moments, start + pd.Timedelta(hours=1)], "sensor": [*sensors, "a"]},
                          index=np.arange(count + 1)[::-1] * 7 + 3)  # fmt: skip
    return stored, points


@settings(max_examples=120, deadline=None)
@given(found=stored_and_points(), with_series=st.booleans(), by_key=st.booleans())
def test_a_point_finds_the_feature_row_of_its_series_and_second_as_the_table_spells_it(
    found, with_series: bool, by_key: bool
) -> None:
    """Issue 18: `attach` looks points up by moment (the table's text read once a slice, no point's time formatted as
    text); each point must find the row a lookup by the table's own text finds: its series (if the spec has one), its
    time to the second (floored, before 1970 too), and nothing for a text that is not the table's spelling of a time;
    given the table's rows or `by_key` of them (what the batch and Spark hold)."""
    from tiffin.features import store

    stored, points = found
    spec = sensor_spec({"horizon": "2h", "features": [{"column": "count", "lags": ["2h"]}]})
    if not with_series:
        spec = spec.model_copy(update={"series": []})
    key = ["sensor", "event_time"] if with_series else ["event_time"]
    stored = stored.drop_duplicates(key).reset_index(drop=True)
    attached = store.attach(spec, points, store.by_key(spec, stored) if by_key else stored)
    for index, point in points.iterrows():
        second = "no time" if pd.isna(point["at"]) else point["at"].floor("s").strftime("%Y-%m-%dT%H:%M:%S")
        same = stored["event_time"] == second
        row = stored[same & (stored["sensor"] == point["sensor"])] if with_series else stored[same]
        expected = float(row["count_lag_2h"].iloc[0]) if len(row) else np.nan
        assert attached.loc[index, "count_lag_2h"] == pytest.approx(expected, nan_ok=True), (point.to_dict(), stored)
    assert attached.index.equals(points.index) and list(attached.columns) == [*points.columns, "count_lag_2h"]
