"""The contract: canonical types, field-level rejects, and nothing lost."""

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec


@pytest.fixture
def contract(bike_spec: DatasetSpec) -> Contract:
    return Contract(bike_spec)


@pytest.fixture
def rows(bike_raw: pd.DataFrame) -> pd.DataFrame:
    return bike_raw.head(8).astype(object).reset_index(drop=True)


def only_reject(result, field: str) -> dict:
    found = result.rejects[result.rejects["field"] == field]
    assert len(found) == 1, result.rejects
    return found.iloc[0].to_dict()


def test_raw_rows_become_canonical_types(contract: Contract, rows: pd.DataFrame) -> None:
    result = contract.validate(rows)
    assert result.rejects.empty
    valid = result.valid
    assert str(valid["dteday"].dtype) == "datetime64[ns]"
    assert valid["hr"].dtype == np.int64 and valid["hr"].between(0, 23).all()
    assert valid["temp"].dtype == np.float64
    assert valid.loc[0, "hr"] == 6  # the raw first row says '6am'


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("hr", 77, "in_range(0, 23)"),
        ("hr", "6.5", "type: integer (hour_of_day)"),
        ("hr", "noon", "type: integer (hour_of_day)"),
        ("temp", "warm", "type: number"),
        ("temp", 99.0, "in_range(-30, 50)"),
        ("weathersit", "Sunny", "isin(['Clear', 'Mist', 'Light Rain', 'Heavy Rain'])"),
        ("dteday", "2012-13-45", "type: date (YYYY-MM-DD)"),
        ("season", None, "not_nullable"),
    ],
)
def test_a_bad_value_is_rejected_with_row_field_value_and_rule(
    contract: Contract, rows: pd.DataFrame, field: str, value: object, rule: str
) -> None:
    rows.loc[3, field] = value
    result = contract.validate(rows)
    reject = only_reject(result, field)
    assert (reject["row"], reject["value"], reject["rule"]) == (3, str(value), rule)
    assert reject["dteday"] == str(rows.loc[3, "dteday"])  # the source key, to find the row again
    assert len(result.valid) == len(rows) - 1 and 3 not in result.valid.index


def test_every_problem_of_every_row_is_reported_and_no_row_is_lost(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[1, "hr"] = 77
    rows.loc[1, "temp"] = "warm"
    rows.loc[5, "season"] = "monsoon"
    result = contract.validate(rows)
    assert sorted(map(tuple, result.rejects[["row", "field"]].to_numpy())) == [
        (1, "hr"),
        (1, "temp"),
        (5, "season"),
    ]
    assert len(result.valid) + result.rejected_rows == len(rows)


def test_a_duplicate_key_keeps_the_first_row_and_quarantines_the_rest(contract: Contract, rows: pd.DataFrame) -> None:
    rows = pd.concat([rows, rows.iloc[[2]]], ignore_index=True)
    result = contract.validate(rows)
    reject = only_reject(result, "dteday+hr")
    assert reject["row"] == len(rows) - 1 and reject["rule"] == "unique key (first kept)"
    assert 2 in result.valid.index


def test_an_integer_where_a_float_belongs_is_that_float(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[0, "temp"] = 21
    result = contract.validate(rows)
    assert result.rejects.empty and result.valid.loc[0, "temp"] == 21.0


def test_an_integral_float_is_an_hour_but_a_fraction_is_not(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[0, "hr"] = 8.0
    rows.loc[1, "hr"] = 8.25
    result = contract.validate(rows)
    assert result.valid.loc[0, "hr"] == 8
    assert only_reject(result, "hr")["row"] == 1


def test_a_missing_weekday_is_derived_from_the_date(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[0, "weekday"] = None
    result = contract.validate(rows)
    expected = pd.Timestamp(rows.loc[0, "dteday"]).strftime("%a")
    assert result.valid.loc[0, "weekday"] == expected


def test_categories_match_case_insensitively(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[0, "weathersit"] = " light rain "
    assert contract.validate(rows).valid.loc[0, "weathersit"] == "Light Rain"


def test_a_nullable_category_may_be_missing(contract: Contract, rows: pd.DataFrame) -> None:
    rows.loc[0, "weathersit"] = None
    result = contract.validate(rows)
    assert result.rejects.empty and pd.isna(result.valid.loc[0, "weathersit"])


def test_serving_needs_no_target_but_every_input(contract: Contract, rows: pd.DataFrame) -> None:
    request = rows.drop(columns=["cnt", "casual", "registered", "atemp"])
    result = contract.validate(request, serving=True)
    assert set(result.rejects["field"]) == {"atemp"}
    assert set(result.rejects["rule"]) == {"required: field is missing"}
    assert result.rejected_rows == len(rows)


def test_event_time_is_date_plus_hour(contract: Contract, rows: pd.DataFrame) -> None:
    valid = contract.validate(rows).valid
    assert contract.spec.event_time(valid).iloc[0] == pd.Timestamp(rows.loc[0, "dteday"]) + pd.Timedelta(hours=6)


def test_a_row_whose_target_has_not_arrived_is_unlabeled_not_a_failure(contract: Contract, rows: pd.DataFrame) -> None:
    """Friction 3 of issue 14: a missing target is a state of its own; a wrong one is still a failure."""
    target = contract.spec.target
    rows.loc[[1, 4], target] = None
    rows.loc[6, target] = "lots"
    rows.loc[4, "temp"] = "warm"  # unlabeled and broken: the contract failure wins
    result = contract.validate(rows)
    assert result.rejects[["row", "field"]].values.tolist() == [[4, "temp"], [6, target]]
    assert result.unlabeled.index.tolist() == [1] and result.unlabeled[target].isna().all()
    assert len(result.valid) == 5 and result.valid[target].dtype == "int64"
    assert len(result.valid) + len(result.unlabeled) + result.rejected_rows == len(rows)  # nothing lost
    served = contract.validate(rows, serving=True)
    assert served.unlabeled.empty and 1 in served.valid.index  # a request has no target: it is scored
