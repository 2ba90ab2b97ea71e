"""The contract's two shortcuts for many rows give the verdict of the long way, on hostile rows too:

- a clean frame skips pandera's pass (`Contract.surely_valid`: the same pandera columns, one vectorised pass a
  column); anything it is not sure of goes to pandera, which names each failure;
- a column repeating a few values is read once per distinct value (`normalise.on_distinct`), as a short one is
  read value by value.
"""

from __future__ import annotations

import hypothesis.strategies as st
import pandas as pd
import pandera.pandas as pa
import pytest
from hypothesis import HealthCheck, given, settings
from pandera.errors import SchemaErrors

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec

from ..hostile import MISSING, as_frame, hostile

FUZZ = settings(max_examples=80, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip


@pytest.fixture(scope="module")
def raw_records(bike_raw: pd.DataFrame) -> list[dict]:
    """40 real raw rows (clock-text hours, text categories), every column: the bases hostile rows change."""
    return bike_raw.sample(40, random_state=11).astype(object).to_dict(orient="records")


def hostile_rows(spec: DatasetSpec, bases: list[dict], min_size: int, max_size: int) -> st.SearchStrategy:
    """Raw rows, each a base (the same base twice: a repeated key) with up to three of any column hostile or
    absent, the target included."""

    @st.composite
    def row(draw: st.DrawFn) -> dict:
        found = dict(draw(st.sampled_from(bases)))
        for name in draw(st.lists(st.sampled_from(list(spec.columns)), max_size=3, unique=True)):
            value = draw(hostile(spec.columns[name]))
            if value is MISSING:
                found.pop(name)
            else:
                found[name] = value
        return found

    return st.lists(row(), min_size=min_size, max_size=max_size).map(as_frame)


def pandera_alone(contract: Contract, raw: pd.DataFrame, serving: bool, monkeypatch: pytest.MonkeyPatch):
    with monkeypatch.context() as patched:
        patched.setattr(Contract, "surely_valid", lambda *_: False)
        return contract.validate(raw, serving=serving)


def assert_same_result(found, reference) -> None:
    for part in ("valid", "rejects", "unlabeled"):
        pd.testing.assert_frame_equal(getattr(found, part), getattr(reference, part), check_index_type=False)


@FUZZ
@given(data=st.data(), serving=st.booleans())
def test_what_the_quick_check_passes_pandera_passes_and_the_verdict_is_pandera_s(
    bike_spec: DatasetSpec, raw_records: list[dict], monkeypatch: pytest.MonkeyPatch, data: st.DataObject,
    serving: bool,
) -> None:  # fmt: skip
    contract = Contract(bike_spec)
    raw = data.draw(hostile_rows(bike_spec, raw_records, 1, 6))
    schema = contract.serving_schema if serving else contract.training_schema
    frame, _ = contract.normalise(raw.reset_index(drop=True), list(schema.columns))
    if contract.surely_valid(frame, schema):
        schema.validate(frame, lazy=True)  # raises SchemaErrors if the shortcut let a failure through
    assert_same_result(contract.validate(raw, serving=serving), pandera_alone(contract, raw, serving, monkeypatch))


def test_a_clean_chunk_skips_pandera_and_a_dirty_one_is_reported_by_it(
    bike_spec: DatasetSpec, bike_raw: pd.DataFrame, monkeypatch: pytest.MonkeyPatch
) -> None:
    contract = Contract(bike_spec)
    calls = []
    original = pa.DataFrameSchema.validate
    monkeypatch.setattr(pa.DataFrameSchema, "validate", lambda *a, **k: calls.append(1) or original(*a, **k))
    clean = bike_raw.head(5000)
    assert len(contract.validate(clean).valid) == 5000
    assert contract.validate(clean, serving=True).rejects.empty
    assert calls == []
    dirty = clean.assign(hr=clean["hr"].where(clean.index != 7, "77"))
    dirty.loc[9, "season"] = "monsoon"
    rejects = contract.validate(dirty).rejects
    assert calls == [1]
    assert rejects[["row", "field", "value", "rule"]].values.tolist() == [
        [7, "hr", "77", "in_range(0, 23)"],
        [9, "season", "monsoon", "isin(['winter', 'spring', 'summer', 'fall'])"],
    ]


@pytest.mark.parametrize("column, dirty", [("temp", 51.0), ("cnt", -1), ("weathersit", None)])
def test_each_rule_the_quick_check_reads_sends_a_breaking_frame_to_pandera(
    bike_spec: DatasetSpec, bike_raw: pd.DataFrame, column: str, dirty: object
) -> None:
    contract = Contract(bike_spec)
    schema = contract.training_schema
    frame, _ = contract.normalise(bike_raw.head(200), list(schema.columns))
    assert contract.surely_valid(frame, schema)
    frame.loc[3, column] = dirty
    if column == "weathersit":  # nullable: a null is allowed, a repeated key is not
        assert contract.surely_valid(frame, schema)
        frame.loc[4, ["dteday", "hr"]] = frame.loc[5, ["dteday", "hr"]].to_numpy()
    assert not contract.surely_valid(frame, schema)
    with pytest.raises(SchemaErrors):
        schema.validate(frame, lazy=True)


WEATHER = ["Clear", "Mist", "Light Rain", "Heavy Rain"]  # every value the spec allows


@pytest.mark.parametrize("check", [pa.Check.isin(WEATHER, ignore_na=False), pa.Check.str_length(1, 10)])
def test_a_check_the_quick_check_cannot_judge_goes_to_pandera(
    bike_spec: DatasetSpec, bike_raw: pd.DataFrame, check: pa.Check
) -> None:
    """A check that judges nulls too, or one the quick check does not know: "not sure", whatever the values."""
    contract = Contract(bike_spec)
    schema = contract.training_schema
    frame, _ = contract.normalise(bike_raw.head(200), list(schema.columns))
    frame.loc[3, "weathersit"] = None  # allowed: the column is nullable
    changed = schema.update_column("weathersit", checks=[check])
    assert contract.surely_valid(frame, schema) and not contract.surely_valid(frame, changed)
    if not check.ignore_na:  # pandera judges the null, as the check asks
        with pytest.raises(SchemaErrors):
            changed.validate(frame, lazy=True)


@FUZZ
@given(data=st.data())
def test_a_column_read_once_per_distinct_value_reads_as_one_read_value_by_value(
    bike_spec: DatasetSpec, raw_records: list[dict], data: st.DataObject
) -> None:
    contract = Contract(bike_spec)
    names = list(bike_spec.columns)
    rows = data.draw(hostile_rows(bike_spec, raw_records, 1, 8))
    raw = rows.sample(300, replace=True, random_state=data.draw(st.integers(0, 99))).reset_index(drop=True)
    frame, problems = contract.normalise(raw, names)  # > 64 rows, each value repeated: read once per distinct value
    pieces = [contract.normalise(raw.iloc[i : i + 50], names) for i in range(0, len(raw), 50)]  # read as they come
    pd.testing.assert_frame_equal(frame, pd.concat([piece[0] for piece in pieces]))
    expected = pd.concat([piece[1] for piece in pieces], ignore_index=True)
    assert by_row(problems) == by_row(expected)


def by_row(problems: pd.DataFrame) -> list[list[str]]:
    return sorted(problems.astype(str).values.tolist(), key=lambda line: (int(line[0]), line[1]))
