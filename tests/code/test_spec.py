import pytest
import yaml
from pydantic import ValidationError

from tiffin.core.spec import DatasetSpec

from ..conftest import ROOT


def bike_spec_dict() -> dict:
    return yaml.safe_load((ROOT / "specs/bike_sharing.yaml").read_text())


def test_the_bike_spec_is_valid_and_hides_target_and_leakage_from_inputs() -> None:
    spec = DatasetSpec.model_validate(bike_spec_dict())
    assert {"cnt", "casual", "registered"}.isdisjoint(spec.input_columns)
    assert spec.columns["holiday"].values == ["No", "Yes"]  # strings, not YAML booleans


@pytest.mark.parametrize("column", ["casual", "registered", "cnt"])
def test_leakage_columns_and_the_target_can_never_be_features(column: str) -> None:
    spec = bike_spec_dict()
    spec["features"]["numeric"].append(column)
    with pytest.raises(ValidationError, match="can never be model inputs"):
        DatasetSpec.model_validate(spec)


def test_a_reference_to_an_undeclared_column_is_named() -> None:
    spec = bike_spec_dict()
    spec["evaluation"]["slices"].append({"column": "rainfall"})
    with pytest.raises(ValidationError, match=r"slices names undeclared columns \['rainfall'\]"):
        DatasetSpec.model_validate(spec)


def test_a_category_needs_its_closed_set() -> None:
    spec = bike_spec_dict()
    del spec["columns"]["season"]["values"]
    with pytest.raises(ValidationError, match="closed set"):
        DatasetSpec.model_validate(spec)


def test_unknown_spec_keys_are_errors_not_silently_ignored() -> None:
    spec = bike_spec_dict()
    spec["columns"]["temp"]["maximum"] = 40
    with pytest.raises(ValidationError, match="maximum"):
        DatasetSpec.model_validate(spec)
