"""The framework is not the example (friction 6 of issue 14): generic code names none of the example's columns."""

from __future__ import annotations

import ast
import io
import re
import tokenize

import pandas as pd
import yaml

from ..conftest import ROOT

GENERIC = ["src", "pipelines", "service", "loadtests"]
# Example columns that are also English words: prose may use the word ("the registered model"), code may not.
ENGLISH = {"registered", "weekday", "season", "holiday", "casual", "temp"}


def example_columns() -> set[str]:
    return set(yaml.safe_load((ROOT / "specs/bike_sharing.yaml").read_text())["columns"])


def mentions(source: str, columns: set[str]) -> list[tuple[int, str]]:
    """(line, name) for each identifier or whole string literal that is a column, and each distinctive column
    name in a comment or docstring."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.NAME and token.string in columns:
            found.append((token.start[0], token.string))
        elif token.type in (tokenize.STRING, tokenize.COMMENT):
            literal = ast.parse(token.string, mode="eval").body if token.type == tokenize.STRING else None
            text = literal.value if isinstance(literal, ast.Constant) else ""
            words = set(re.findall(r"[A-Za-z_]+", token.string)) & (columns - ENGLISH)
            found += [(token.start[0], name) for name in sorted(words | ({text} & columns))]
    return found


def test_the_check_finds_a_column_in_code_and_in_prose_but_not_an_english_word() -> None:
    columns = {"dteday", "registered"}
    source = 'x = frame["dteday"]\n# the registered model\ny = "registered"\nz = dteday  # hr\n'
    assert mentions(source, columns | {"hr"}) == [(1, "dteday"), (3, "registered"), (4, "dteday"), (4, "hr")]


def test_no_generic_file_names_an_example_column() -> None:
    columns = example_columns()
    files = [path for folder in GENERIC for path in sorted((ROOT / folder).rglob("*.py"))]
    found = {f"{path.relative_to(ROOT)}:{line} {name}" for path in files for line, name in
             mentions(path.read_text(), columns)}  # fmt: skip
    makefile = {
        f"Makefile {name}" for name in columns - ENGLISH if re.search(rf"\b{name}\b", (ROOT / "Makefile").read_text())
    }
    assert not found | makefile


def test_charts_and_defaults_come_from_the_spec_and_params() -> None:
    """The monitoring chart said "demand", the simulation "rentals per hour", its dates were the example's."""
    from click.testing import CliRunner

    from tiffin.cli.main import main
    from tiffin.core.spec import load_spec
    from tiffin.lifecycle.monitor_report import actual_chart

    spec = load_spec(ROOT / "tests/fixtures/store_sales/spec.yaml")
    scored = pd.DataFrame({"row_key": ["a"], "event_time": [pd.Timestamp("2024-01-01")], "actual": [1.0],
                           "prediction": [1.5], "model": ["store_units:1"], "role": ["champion"]})  # fmt: skip
    assert actual_chart(scored, spec.target_label).axes[0].get_ylabel() == "units"  # no description: the name
    described = spec.model_copy(update={"columns": {**spec.columns, "units": spec.columns["units"].model_copy(
        update={"description": "Units sold per order line"})}})  # fmt: skip
    assert described.target_label == "Units sold per order line"
    helped = CliRunner().invoke(main, ["simulate", "--help"]).output
    assert "params ingest.end" in helped and "2012" not in helped
