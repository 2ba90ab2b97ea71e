"""The contract is exact on every path: documented forms only, declared agreements, no unknown fields, no crash.

Each reproduction of issue 13 ("the API under hostile input") is here at the contract, on both the record
path (the API) and the DataFrame path (training, batch, Spark); a hypothesis generator derived from the spec
then throws hostile records at both.
"""

from __future__ import annotations

import json
import math

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from tiffin.core.contract import UNKNOWN_FIELD_RULE, Contract, RecordValidator, disagreements
from tiffin.core.spec import ColumnSpec, DatasetSpec, load_spec
from tiffin.serving.scorer import Scorer

from ..conftest import ROOT
from ..hostile import as_frame, hostile_records

VALID = {
    "dteday": "2012-06-01", "hr": 8, "season": "summer", "holiday": "No", "weekday": "Fri", "workingday": "Yes",
    "weathersit": "Clear", "temp": 21.3, "atemp": 25.0, "hum": 60.0, "windspeed": 12.0,
}  # fmt: skip
BEYOND_FLOAT = json.loads("1" + "0" * 400)  # a JSON integer of 401 digits: no float64 holds it


def both_paths(spec: DatasetSpec, records: list[dict]) -> tuple[set, set]:
    """(row, field, rule) problems of the record path and of the DataFrame path."""
    _, problems = RecordValidator(spec).validate(records)
    frame = Contract(spec).validate(as_frame(records), serving=True).rejects
    return (
        {(p["row"], p["field"], p["rule"]) for p in problems},
        set(frame[["row", "field", "rule"]].itertuples(index=False, name=None)),
    )


# Reproduction 1: the 500s. Each was an OverflowError or a failed Int64 cast on the landed tree.
@pytest.mark.parametrize(
    "rows, field",
    [
        ([{**VALID, "temp": BEYOND_FLOAT}], "temp"),
        ([{**VALID, "windspeed": 10**309}], "windspeed"),
        ([{**VALID, "hr": "1e19"}], "hr"),
        ([{**VALID, "hr": "9.3e18"}], "hr"),
        ([{**VALID, "hr": 1e20}, {**VALID, "hr": "7"}], "hr"),
        ([{**VALID, "hr": BEYOND_FLOAT}], "hr"),
        ([{**VALID, "hr": 10**30}, {**VALID, "hr": "7"}], "hr"),
        ([{**VALID, "hr": -(2**63)}], "hr"),
        ([{**VALID, "temp": float("inf")}], "temp"),
    ],
)
def test_numbers_beyond_a_types_range_are_problems_on_both_paths(
    bike_spec: DatasetSpec, rows: list, field: str
) -> None:
    by_records, by_frame = both_paths(bike_spec, rows)
    assert by_records and by_records == by_frame
    assert {(row, name) for row, name, _ in by_records} == {(0, field)}


# Reproduction 2a: '2012' was scored as 2012-01-01, and so were the others.
ARABIC_INDIC_DAY = "".join(chr(0x660 + int(c)) if c.isdigit() else c for c in "2012-06-01")  # \d matches it


@pytest.mark.parametrize(
    "day", ["2012", "2012-06", "20120601", 20120601, "2012-6-1", "2012-06-01T08:00:00", ARABIC_INDIC_DAY]
)
def test_a_date_is_read_only_in_its_documented_form(bike_spec: DatasetSpec, day: object) -> None:
    by_records, by_frame = both_paths(bike_spec, [{**VALID, "dteday": day}])
    assert by_records == by_frame == {(0, "dteday", "type: date (YYYY-MM-DD)")}


def test_the_documented_date_forms_and_database_dates_are_read(bike_spec: DatasetSpec) -> None:
    days = ["2012-06-01", "2012-06-01T00:00:00"]
    assert both_paths(bike_spec, [{**VALID, "dteday": day} for day in days]) == (set(), set())
    from_database = pd.DataFrame([{**VALID, "dteday": pd.Timestamp("2012-06-01").date()}])
    assert Contract(bike_spec).validate(from_database, serving=True).rejects.empty


def test_a_moment_is_read_only_as_iso_8601_with_a_time() -> None:
    spec = load_spec(ROOT / "tests/fixtures/store_sales/spec.yaml")
    column = next(name for name, c in spec.columns.items() if c.type == "datetime")
    good = ["2024-03-01T08:00:00", "2024-03-01 08:00", "2024-03-01T08:00:00.5Z", "2024-03-01T08:00:00+01:00"]
    bad = ["2024-03-01", "2024", "2024-03-01T8:00", "01/03/2024 08:00", 1709280000]
    raw = pd.DataFrame({column: good + bad})
    canonical, problems = Contract(spec).normalise(raw, [column])
    assert sorted(problems["row"]) == list(range(len(good), len(good) + len(bad)))
    assert canonical[column].iloc[: len(good)].notna().all()


# Reproduction 2b: 'Mon' on a Friday changed the prediction (550 vs 620).
def test_a_derived_column_must_agree_with_its_source(bike_spec: DatasetSpec) -> None:
    rows = [VALID, {**VALID, "weekday": "Mon"}, {**VALID, "weekday": "mon"}, {**VALID, "weekday": None}]
    by_records, by_frame = both_paths(bike_spec, rows)
    rule = "agrees_with: weekday_name(dteday)"
    assert by_records == by_frame == {(1, "weekday", rule), (2, "weekday", rule)}


def test_an_hour_can_be_declared_to_agree_with_its_timestamp() -> None:
    spec = load_spec(ROOT / "tests/fixtures/store_sales/spec.yaml")
    moment = next(name for name, c in spec.columns.items() if c.type == "datetime")
    columns = {**spec.columns, "hour": ColumnSpec(type="int", agrees_with={"using": "hour", "from": moment})}
    spec = spec.model_copy(update={"columns": columns})
    raw = pd.DataFrame({moment: ["2024-03-01T08:00:00", "2024-03-01T08:00:00"], "hour": [8, 9]})
    canonical, problems = Contract(spec).normalise(raw, [moment, "hour"])
    assert problems.empty
    assert {name: rows.tolist() for name, rows in disagreements(spec, canonical, [moment, "hour"]).items()} == {
        "hour": [1]
    }


def test_a_spec_cannot_declare_agreement_with_an_undeclared_column(bike_spec: DatasetSpec) -> None:
    document = bike_spec.model_dump(by_alias=True)
    document["columns"]["weekday"]["agrees_with"] = {"using": "weekday_name", "from": "no_such_day"}
    with pytest.raises(ValueError, match=r"weekday\.agrees_with\.from names an undeclared column"):
        DatasetSpec.model_validate(document)


# Reproduction 2c: unknown fields were silently ignored.
def test_unknown_fields_are_refused_by_name_unless_the_spec_ignores_them(bike_spec: DatasetSpec) -> None:
    rows = [{**VALID, "temperature": 21.3}, {**VALID, "cnt": 120}, VALID]
    _, problems = RecordValidator(bike_spec).validate(rows)
    assert [(p["row"], p["field"], p["rule"]) for p in problems] == [
        (0, "temperature", UNKNOWN_FIELD_RULE),
        (1, "cnt", UNKNOWN_FIELD_RULE),
    ]
    lenient = bike_spec.model_copy(update={"unknown_fields": "ignore"})
    assert RecordValidator(lenient).validate(rows)[1] == []


@settings(
    max_examples=300, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_hostile_records_are_named_problems_or_the_pipelines_own_prediction(
    data: st.DataObject, bike_spec: DatasetSpec, scorer: Scorer, bike_example: dict
) -> None:
    records = data.draw(hostile_records(bike_spec, bike_example))
    scored = scorer.score(records)  # never raises
    if scored.problems:
        assert all(p["field"] and p["rule"] and 0 <= p["row"] < len(records) for p in scored.problems)
        by_records, by_frame = both_paths(bike_spec, records)
        unknown = {(row, field) for row, field, rule in by_records if rule == UNKNOWN_FIELD_RULE}
        assert {row for row, *_ in by_records} - {row for row, _ in unknown} <= {row for row, *_ in by_frame}
        return
    valid = Contract(bike_spec).validate(as_frame(records), serving=True)
    assert valid.rejects.empty
    expected = scorer.pipeline.predict(valid.valid)
    assert all(math.isfinite(p) for p in scored.predictions)
    np.testing.assert_allclose(scored.predictions, expected, rtol=0, atol=1e-9)
