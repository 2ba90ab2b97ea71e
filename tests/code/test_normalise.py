import numpy as np
import pandas as pd
import pytest

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
