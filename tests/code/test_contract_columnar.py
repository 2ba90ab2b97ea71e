"""A large request is checked column by column without a Python step per row (sets of types, one sorted pass over
the distinct days for an agreement); one record takes the row-by-row steps. Both give the same verdict: the same
problems in the same order (so the same 400 body), the same canonical columns and the same predictions."""

from __future__ import annotations

import json

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings

from tiffin.core.contract import COLUMNAR_ROWS, Contract, RecordValidator
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.api import problems_body
from tiffin.serving.scorer import Scorer

from ..hostile import as_frame, hostile_records


@pytest.fixture(scope="module")
def real_records(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> list[dict]:
    """60 real records of many days, in canonical JSON form: the bases hostile records change."""
    canonical = Contract(bike_spec).validate(bike_raw.sample(60, random_state=5)).valid
    frame = canonical[bike_spec.input_columns]
    return json.loads(frame.to_json(orient="records", date_format="iso", date_unit="s"))


@pytest.fixture(scope="module")
def scorer(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> Scorer:
    train = Contract(bike_spec).validate(bike_raw.sample(3000, random_state=2)).valid
    return Scorer(build_pipeline(bike_spec, {"max_iter": 60}).fit(train, train["cnt"]), bike_spec)


def one_by_one(validator: RecordValidator, records: list[dict]) -> tuple[dict, list[dict]]:
    """The reference: each record validated alone (the row-by-row steps), rows renumbered, columns joined."""
    columns, problems = {}, []
    for row, record in enumerate(records):
        single, found = validator.validate([record])
        problems += [{**problem, "row": row} for problem in found]
        for name, values in single.items():
            columns.setdefault(name, []).extend(list(values))
    return columns, problems


def assert_same_columns(fast: dict, reference: dict) -> None:
    assert fast.keys() == reference.keys()
    for name, values in fast.items():
        if isinstance(values, np.ndarray):
            np.testing.assert_array_equal(values, np.array(reference[name], dtype=values.dtype))
        else:
            assert list(values) == reference[name], name


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_a_large_request_has_the_verdict_of_its_records_one_by_one(
    data: st.DataObject, bike_spec: DatasetSpec, real_records: list[dict], scorer: Scorer
) -> None:
    records = data.draw(hostile_records(bike_spec, real_records, min_size=COLUMNAR_ROWS + 1, max_size=60))
    validator = RecordValidator(bike_spec)
    columns, problems = validator.validate(records)
    reference_columns, reference_problems = one_by_one(RecordValidator(bike_spec), records)
    assert problems == reference_problems
    assert problems_body(problems, len(records)) == problems_body(reference_problems, len(records))
    if problems:
        return
    assert_same_columns(columns, reference_columns)
    expected = scorer.pipeline.predict(Contract(bike_spec).validate(as_frame(records), serving=True).valid)
    np.testing.assert_array_equal(scorer.score(records).predictions, expected)


def test_weekdays_that_disagree_with_their_day_are_named_in_a_large_request(
    bike_spec: DatasetSpec, real_records: list[dict]
) -> None:
    records = [dict(record) for record in real_records]
    wrong = {3: "Mon", 17: None, 40: "Sun"}
    for row, weekday in wrong.items():
        records[row]["weekday"] = weekday if weekday != records[row]["weekday"] else "Tue"
    _, problems = RecordValidator(bike_spec).validate(records)
    _, reference = one_by_one(RecordValidator(bike_spec), records)
    assert problems == reference
    assert {p["row"] for p in problems} == {3, 40}  # a null weekday is filled from its day, not a disagreement
