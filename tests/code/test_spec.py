from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from pydantic import ValidationError

from tiffin.cli.main import main as cli
from tiffin.core.params import Bless, ParamsError
from tiffin.core.spec import DatasetSpec, SpecError, load_spec
from tiffin.storage.settings import load_params

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


# -- a spec mistake is the user's to fix: the file, the key path and what is allowed, no traceback -------------


def write_spec(path: Path, change: Callable[[dict], object]) -> str:
    spec = bike_spec_dict()
    change(spec)
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return str(path)


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s: s["columns"]["season"].update(parse="no_such_parser"),
         "columns.season.parse: `parse` applies to int and float columns only, not to a category column"),
        (lambda s: s["columns"]["hr"].update(parse="no_such_parser"),
         "columns.hr.parse: unknown parser 'no_such_parser': use one of hour_of_day or 'package.module:function'"),
        (lambda s: s["columns"]["hr"].update(parse="weekday_name"), "'weekday_name' is a fill function"),
        (lambda s: s["columns"]["weekday"]["fill_missing"].update(using="hour_of_day"),
         "columns.weekday.fill_missing.using: unknown fill function 'hour_of_day' ('hour_of_day' is a parser)"),
        (lambda s: s["columns"]["hr"].update(parse="no_package.here:parse"),
         "'no_package.here:parse' cannot be imported"),
        (lambda s: s["columns"]["temp"].update(maximum=40),
         "columns.temp.maximum: unknown key; allowed here: type, nullable, min, max, values, parse"),
        (lambda s: s["columns"]["hr"].update(type="integer"),
         "columns.hr.type: Input should be 'int', 'float', 'category', 'date', 'datetime' or 'string'"),
        (lambda s: s["evaluation"].pop("baseline_group_by"), "evaluation.baseline_group_by: required, missing"),
        (lambda s: s.update(name="Bike Demand"), "name: String should match pattern"),
    ],
)  # fmt: skip
def test_a_spec_mistake_names_the_file_the_key_and_what_is_allowed(tmp_path: Path, change: Callable, says: str) -> None:
    path = write_spec(tmp_path / "spec.yaml", change)
    with pytest.raises(SpecError) as raised:
        load_spec(path)
    assert str(raised.value).startswith(f"{path}: ")
    assert says in str(raised.value)


def test_the_example_specs_use_parsers_and_fill_functions_where_they_apply() -> None:
    for path in (ROOT / "specs").glob("*.yaml"):
        load_spec(path)


def test_the_command_line_shows_a_spec_mistake_without_a_traceback(tmp_path: Path) -> None:
    path = write_spec(tmp_path / "spec.yaml", lambda s: s["columns"]["season"].update(parse="no_such_parser"))
    done = CliRunner().invoke(cli, ["validate", "--spec", path, str(ROOT / "specs/bike_sharing.yaml")])
    assert done.exit_code == 2, done.output
    assert done.output == f"Error: {path}: columns.season.parse: `parse` applies to int and float columns only, " \
                          "not to a category column (given: 'no_such_parser')\n"  # fmt: skip


def test_a_params_mistake_names_the_file_and_the_key(tmp_path: Path) -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["bless"]["margn"] = 0.02
    params["split"] = {"validation_start": "2012-10-01", "test_start": "2012-07-01"}
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ParamsError) as raised:
        load_params(path)
    assert str(raised.value).splitlines() == [
        f"{path}: split: validation_start must come before test_start",
        f"{path}: bless.margn: unknown key; allowed here: {', '.join(Bless.model_fields)}",
    ]


def test_a_command_that_reads_one_section_checks_that_section_alone(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.yaml"
    path.write_text(yaml.safe_dump({"monitor": {"min_rows": 100, "max_drifted_features": 2}}))
    assert load_params(path, only=("monitor",)) == {"monitor": {"min_rows": 100, "max_drifted_features": 2}}
    with pytest.raises(ParamsError, match="spec: required, missing"):
        load_params(path)
    path.write_text(yaml.safe_dump({"monitor": {"min_row": 100}}))
    with pytest.raises(ParamsError, match=r"monitor.min_row: unknown key; allowed here: feature_psi"):
        load_params(path, only=("monitor",))
