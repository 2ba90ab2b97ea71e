import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tiffin.core import normalise
from tiffin.core.normalise import FILLS, PARSERS, hour_of_day, resolve, weekday_name


@pytest.mark.parametrize(
    ("raw", "hour"),
    [
        ("6am", 6),
        ("12am", 0),
        ("12pm", 12),
        ("11pm", 23),
        ("11 PM", 23),
        ("1a.m.", 1),
        (6, 6),
        ("6", 6),
        (6.0, 6),
    ],
)
def test_hour_of_day_reads_clock_text_and_numbers(raw: object, hour: int) -> None:
    assert hour_of_day(pd.Series([raw], dtype=object)).iloc[0] == hour


@pytest.mark.parametrize("raw", ["13pm", "0am", "noon", "six", ""])
def test_hour_of_day_gives_nan_for_what_is_no_hour(raw: str) -> None:
    assert np.isnan(hour_of_day(pd.Series([raw], dtype=object)).iloc[0])


def test_hour_of_day_leaves_out_of_range_numbers_to_the_contract() -> None:
    assert hour_of_day(pd.Series([77])).iloc[0] == 77


def test_weekday_name() -> None:
    dates = pd.to_datetime(pd.Series(["2012-06-01", "2012-06-03"]))
    assert weekday_name(dates).tolist() == ["Fri", "Sun"]


def test_resolve_names_the_known_parsers_on_a_typo() -> None:
    with pytest.raises(ValueError, match="hour_of_day"):
        resolve("hour_of_dya", PARSERS)
    assert resolve("tiffin.core.normalise:weekday_name", FILLS) is weekday_name


def test_booleans_are_not_taken_for_the_numbers_they_equal() -> None:
    """pandas' factorize holds False equal to 0.0 and True to 1: mapped per distinct value, a boolean after a 0.0
    was read as 0.0 (and a request of many records accepted what one record alone was refused for)."""
    raw = pd.Series([0.0, 1, False, True, "x", 0.0], dtype=object)
    mapped = normalise.map_unique(raw, lambda value: type(value).__name__)
    assert mapped.tolist() == ["float", "int", "bool", "bool", "str", "float"]
    assert normalise.without_booleans(raw).isna().tolist() == [False, False, True, True, False, False]


# A database's TEXT column repeats a few values: read once per distinct value, every value must still read as if
# alone (a number, NaN for junk or missing, NaN beyond float64), whatever mixes with it.
_RAW_VALUES = st.one_of(
    st.integers(-(10**30), 10**30),
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(0, 30).map(str),
    st.floats(-1e6, 1e6).map(repr),
    st.sampled_from(["", " 7 ", "six", "1e400", "NaN", "0x10", "٣", "7.0"]),
    st.none(),
)


@given(pool=st.lists(_RAW_VALUES, min_size=1, max_size=12), picks=st.lists(st.integers(0, 11), min_size=100))
@settings(max_examples=150, deadline=None)
def test_numbers_read_once_per_distinct_value_equal_each_value_read_alone(pool: list, picks: list[int]) -> None:
    raw = pd.Series([pool[i % len(pool)] for i in picks], dtype=object)
    alone = [normalise.to_numbers(pd.Series([value], dtype=object)).iloc[0] for value in raw]
    pd.testing.assert_series_equal(normalise.to_numbers(raw), pd.Series(alone, dtype="float64"))


def test_weekday_name_has_none_for_a_missing_date() -> None:
    dates = pd.Series(pd.to_datetime(["2012-06-04", None, "2012-06-10"]))
    assert weekday_name(dates).tolist() == ["Mon", None, "Sun"]
