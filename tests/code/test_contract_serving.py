"""The API's record-by-record contract and the DataFrame contract are one contract.

Both are derived from the spec; this proves they accept, reject and canonicalise alike, on real rows
and on a seeded catalogue of bad and borderline values.
"""

from __future__ import annotations

import json
import random

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract, RecordValidator
from tiffin.core.spec import DatasetSpec
from tiffin.features import FeatureEncoder

ODD_VALUES = {
    "int": [77, -1, 7.5, 8.0, "8", " 9 ", "6am", "12pm", "noon", "", True, None, 23, 0, {}, [8]],
    "float": [1e9, -100, "warm", "21.5", "", "nan", True, None, 3, 0.0, {}, [1.5]],
    "category": ["Sunny", "clear", " Clear ", "MIST", 3, True, "", None, {}, ["Clear"]],
    "date": ["2012-02-30", "2012-06-01T00:00:00", "2012-06-01T08:00:00", "2012/06/01", "June 1st", 20120601, None, {}],
}


def canonical_records(frame: pd.DataFrame, columns: list[str]) -> list[dict]:
    return json.loads(frame[columns].to_json(orient="records", date_format="iso", date_unit="s"))


@pytest.fixture(scope="module")
def records(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> list[dict]:
    """400 real rows in canonical form, 300 of them with one to three odd values or missing fields."""
    canonical = Contract(bike_spec).validate(bike_raw.sample(400, random_state=1)).valid
    rows = canonical_records(canonical, bike_spec.input_columns)
    rng = random.Random(7)
    for row in rows[100:]:
        for field in rng.sample(bike_spec.input_columns, rng.randint(1, 3)):
            if rng.random() < 0.15:
                del row[field]
            else:
                row[field] = rng.choice(ODD_VALUES[bike_spec.columns[field].type])
    return rows


def dataframe_verdict(contract: Contract, records: list[dict]) -> tuple[set, pd.DataFrame]:
    result = contract.validate(pd.DataFrame.from_records(records), serving=True)
    problems = {
        (row, field, rule) for row, field, rule in result.rejects[["row", "field", "rule"]].itertuples(index=False)
    }
    return problems, result.valid


def record_verdict(spec: DatasetSpec, records: list[dict]) -> tuple[set, dict]:
    columns, problems = RecordValidator(spec).validate(records)
    return {(p["row"], p["field"], p["rule"]) for p in problems}, columns


def comparable(problems: set) -> set:
    """A field absent from one record is a null cell in a DataFrame: the same problem by two names."""
    return {
        (row, field, "not_nullable" if rule == "required: field is missing" else rule) for row, field, rule in problems
    }


def test_both_paths_reject_the_same_rows_fields_and_rules(bike_spec: DatasetSpec, records: list[dict]) -> None:
    frame_problems, _ = dataframe_verdict(Contract(bike_spec), records)
    record_problems, _ = record_verdict(bike_spec, records)
    assert len(frame_problems) > 150  # the catalogue does reach the rules
    assert comparable(record_problems) == comparable(frame_problems)


def test_both_paths_give_the_same_features_for_the_rows_they_accept(
    bike_spec: DatasetSpec, records: list[dict]
) -> None:
    _, valid = dataframe_verdict(Contract(bike_spec), records)
    accepted = [records[i] for i in valid.index]
    record_problems, columns = record_verdict(bike_spec, accepted)
    assert not record_problems
    encoder = FeatureEncoder.from_spec(bike_spec)
    np.testing.assert_array_equal(encoder.transform(columns), encoder.transform(valid))
