"""Seeding and reading the source database, on SQLite and on PostgreSQL."""

from datetime import datetime

import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.storage import database as db


@pytest.fixture
def sample(bike_raw: pd.DataFrame) -> pd.DataFrame:
    """Three days of raw rows, missing values included."""
    days = bike_raw[bike_raw["dteday"].isin(["2012-03-01", "2012-03-02", "2012-03-03"])]
    return days.reset_index(drop=True)


def read_all(url: str, spec: DatasetSpec, start: str = "2000-01-01", end: str = "2100-01-01") -> pd.DataFrame:
    return pd.concat(list(db.read_window(db.engine_for(url), spec, start, end)) or [pd.DataFrame()])


def test_seeding_twice_adds_nothing(db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame) -> None:
    engine = db.engine_for(db_url)
    first = db.seed(engine, bike_spec, sample)
    second = db.seed(engine, bike_spec, sample)
    assert (first.inserted, second.inserted) == (len(sample), 0)
    assert db.count_rows(engine, bike_spec) == len(sample)


def test_rows_are_stored_as_they_came(db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame) -> None:
    db.seed(db.engine_for(db_url), bike_spec, sample)
    stored = read_all(db_url, bike_spec).sort_values(["dteday", "hr"]).reset_index(drop=True)
    expected = sample.sort_values(["dteday", "hr"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
    assert stored["hr"].str.endswith(("am", "pm")).all()  # text hours, not cleaned


def test_a_cut_off_loads_only_earlier_hours_and_the_rest_arrives_later(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    engine = db.engine_for(db_url)
    held_back = Contract(bike_spec).held_back(sample, datetime(2012, 3, 2, 6))
    result = db.seed(engine, bike_spec, sample, held_back=held_back)
    day_1 = (sample["dteday"] == "2012-03-01").sum()
    early_day_2 = (
        (sample["dteday"] == "2012-03-02") & sample["hr"].isin(["12am", *[f"{h}am" for h in range(1, 7)]])
    ).sum()
    assert result.inserted == day_1 + early_day_2
    assert result.held_back == len(sample) - result.inserted
    rest = db.seed(engine, bike_spec, sample)
    assert rest.inserted == len(sample) - result.inserted


def test_the_window_is_closed_and_a_date_end_includes_the_whole_day(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    db.seed(db.engine_for(db_url), bike_spec, sample)
    window = read_all(db_url, bike_spec, "2012-03-02", "2012-03-02")
    assert set(window["dteday"]) == {"2012-03-02"}
    assert len(window) == (sample["dteday"] == "2012-03-02").sum()


def test_reading_a_missing_table_says_how_to_fix_it(db_url: str, bike_spec: DatasetSpec) -> None:
    with pytest.raises(LookupError, match="tiffin db seed"):
        read_all(db_url, bike_spec)
