"""Time zones (friction 4 of issue 14): a spec declares its clock's zone; both contract paths read it alike."""

from __future__ import annotations

import pandas as pd
import pytest
from pydantic import ValidationError

from tiffin.core.contract import Contract, RecordValidator
from tiffin.core.spec import DatasetSpec, TimestampSpec, load_spec
from tiffin.features.encoder import _date_parts

from ..conftest import ROOT


def zoned(zone: str | None) -> DatasetSpec:
    spec = load_spec(ROOT / "tests/fixtures/store_sales/spec.yaml")
    return spec.model_copy(update={"timestamp": TimestampSpec(column=spec.timestamp.column, timezone=zone)})


def read(spec: DatasetSpec, moments: list) -> tuple[list, list]:
    """Canonical moments by the DataFrame contract, checked equal to the record validator's; rejected rows."""
    column = spec.timestamp.column
    canonical, problems = Contract(spec).normalise(pd.DataFrame({column: moments}, dtype=object), [column])
    records, record_problems = RecordValidator(spec).validate([{column: m} for m in moments])
    assert pd.Series(records[column]).equals(canonical[column].reset_index(drop=True))
    assert sorted(p["row"] for p in record_problems if p["field"] == column) == sorted(problems["row"])
    return [None if pd.isna(m) else str(m) for m in canonical[column]], sorted(problems["row"])


def test_an_offset_is_converted_to_the_declared_zone_and_a_naive_time_is_local() -> None:
    """The reproduction: 08:00+12:00 was read as 20:00 UTC the day before and scored as another hour."""
    moments, rejected = read(zoned("Pacific/Auckland"), ["2025-06-02T08:00:00+12:00", "2025-06-02T08:00:00",
                                                        "2025-06-01T20:00:00Z"])  # fmt: skip
    assert moments == ["2025-06-02 08:00:00"] * 3 and rejected == []
    without_zone, _ = read(zoned(None), ["2025-06-02T08:00:00+12:00"])
    assert without_zone == ["2025-06-01 20:00:00"]  # undeclared: UTC, as before


def test_daylight_saving_gap_is_refused_and_the_repeated_hour_read_as_the_clock_shows_it() -> None:
    spec = zoned("Europe/Paris")
    # 2025-03-30: clocks jump from 02:00 to 03:00. 2025-10-26: 03:00 CEST falls back to 02:00 CET.
    moments, rejected = read(spec, ["2025-03-30T02:30:00", "2025-03-30T03:30:00", "2025-03-30T01:30:00Z",
                                    "2025-10-26T02:30:00+02:00", "2025-10-26T02:30:00+01:00"])  # fmt: skip
    assert rejected == [0]
    assert moments[1:] == ["2025-03-30 03:30:00", "2025-03-30 03:30:00", "2025-10-26 02:30:00", "2025-10-26 02:30:00"]
    problems = Contract(spec).validate(pd.DataFrame({spec.timestamp.column: ["2025-03-30T02:30:00"]})).rejects
    assert "exists in Europe/Paris" in problems.loc[problems["field"] == spec.timestamp.column, "rule"].item()


def test_date_parts_come_from_local_time() -> None:
    spec = zoned("America/New_York")
    column = spec.timestamp.column
    canonical, _ = Contract(spec).normalise(pd.DataFrame({column: ["2025-01-06T04:30:00Z"]}), [column])
    hour, weekday = _date_parts(canonical[column].to_numpy(), ["hour", "dayofweek"])
    assert [hour[0], weekday[0]] == [23, 6]  # 23:30 on Sunday in New York, 04:30 on Monday in UTC


def test_a_zone_must_be_an_iana_name() -> None:
    with pytest.raises(ValidationError, match="no IANA zone"):
        TimestampSpec(column="at", timezone="Mars/Olympus")
