"""`tiffin spec init`: a draft spec inferred from a real table (a file, SQLite, PostgreSQL) loads as a spec, with the
types, ranges, closed sets, nullability and key the rows show, and its guesses marked DECIDE."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml
from click.testing import CliRunner

from tiffin.cli.main import main
from tiffin.core.contract import Contract
from tiffin.core.draft import draft_spec, spec_name
from tiffin.core.spec import DatasetSpec, load_spec

from ..conftest import ROOT
from ..fixtures.store_sales.make_data import make_order_lines

SENSORS = ["alder", "birch", "cedar", "dogwood", "elm", "fir"]
HOURS = 48
REPEATED = [10, 40]  # rows given twice: two duplicate keys


def sensor_readings() -> pd.DataFrame:
    """Many series, hourly: one row per (hour, sensor), a count with gaps, a float after it, two repeated rows."""
    rng = np.random.default_rng(11)
    moments = pd.date_range("2024-03-01", periods=HOURS, freq="h")
    rows = pd.DataFrame([(moment, sensor) for moment in moments for sensor in SENSORS], columns=["seen_at", "sensor"])
    rows["visits"] = rng.poisson(20, len(rows)).astype("float64")
    rows.loc[rows.index % 17 == 3, "visits"] = np.nan
    rows["level"] = rng.normal(5, 2, len(rows)).round(3)
    rows = pd.concat([rows, rows.iloc[REPEATED]], ignore_index=True)
    return rows.sample(frac=1.0, random_state=3).reset_index(drop=True)


def init(*args: str) -> str:
    result = CliRunner().invoke(main, ["spec", "init", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def flat(text: str) -> str:
    """The text with wrapped comment lines joined, to find a phrase wherever the wrapping broke it."""
    return re.sub(r"\n *# +", " ", text)


def decide_comment_above(text: str, field: str) -> bool:
    """The comment block right above the top-level `field:` line holds a DECIDE line."""
    lines = text.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(f"{field}:"))
    block = []
    for line in reversed(lines[:at]):
        if not line.startswith("#"):
            break
        block.append(line)
    return any(line.startswith("# DECIDE:") for line in block)


def assert_sensor_draft(spec: DatasetSpec, text: str, rows: pd.DataFrame) -> None:
    assert spec.key == ["seen_at", "sensor"]
    assert "2 duplicate keys" in flat(text)
    assert spec.timestamp.column == "seen_at" and spec.timestamp.hour is None
    assert spec.source.window_column == "seen_at"
    columns = spec.columns
    assert columns["seen_at"].type == "datetime" and not columns["seen_at"].nullable
    assert columns["sensor"].type == "category" and columns["sensor"].values == SENSORS
    visits = columns["visits"]
    assert spec.target == "visits"  # the number with gaps, though not the last numeric column
    assert (visits.type, visits.nullable, visits.min, visits.max) == (
        "int",
        True,
        int(rows["visits"].min()),
        int(rows["visits"].max()),
    )
    level = columns["level"]
    assert (level.type, level.nullable) == ("float", False)
    assert (level.min, level.max) == (rows["level"].min(), rows["level"].max())
    assert spec.features.numeric == ["level"] and spec.features.categorical == ["sensor"]
    assert spec.features.date_parts == {"seen_at": ["hour", "dayofweek", "month"]}
    assert spec.evaluation.baseline_group_by == ["sensor"]
    assert [s.column for s in spec.evaluation.slices] == ["sensor"]
    assert spec.model.params == {"loss": "poisson", "random_state": 42}  # a count
    # the series is declared; the zone of the clock only a person knows: a DECIDE comment with an example
    assert spec.series == ["sensor"] and [s.column for s in spec.slices] == ["sensor"]
    assert "timezone" in text and spec.timestamp.timezone is None
    for field in ("key", "timestamp", "target", "never_features", "features"):
        assert decide_comment_above(text, field), field


def test_a_many_series_hourly_file_drafts_a_spec_that_loads(tmp_path: Path) -> None:
    rows = sensor_readings()
    rows.assign(seen_at=rows["seen_at"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(tmp_path / "Sensor Readings.csv",
                                                                                   index=False)  # fmt: skip
    out = tmp_path / "specs/sensor_readings.yaml"
    shown = init("--csv", str(tmp_path / "Sensor Readings.csv"), "--out", str(out))
    text = out.read_text()
    spec = load_spec(out)
    assert spec.name == "sensor_readings" and spec.source.table == "sensor_readings"
    assert spec.source.seed_file == str(tmp_path / "Sensor Readings.csv")
    assert_sensor_draft(spec, text, rows)
    assert "key: [seen_at, sensor], 2 duplicate keys" in shown and "target: the column the model predicts" in shown
    # The contract built from the draft accepts the rows it was drafted from, but for the repeated keys.
    result = Contract(spec).validate(pd.read_csv(tmp_path / "Sensor Readings.csv"))
    assert result.rejected_rows == len(REPEATED)


def test_an_existing_spec_is_kept_unless_forced(tmp_path: Path) -> None:
    sensor_readings().to_csv(tmp_path / "rows.csv", index=False)
    out = tmp_path / "rows.yaml"
    out.write_text("mine\n")
    refused = CliRunner().invoke(main, ["spec", "init", "--csv", str(tmp_path / "rows.csv"), "--out", str(out)])
    assert refused.exit_code == 1 and "--force" in refused.output and out.read_text() == "mine\n"
    init("--csv", str(tmp_path / "rows.csv"), "--out", str(out), "--force", "--name", "visits")
    assert load_spec(out).name == "visits"


def test_a_database_table_drafts_the_same_spec(db_url: str, tmp_path: Path) -> None:
    """SQLite keeps the times as text, PostgreSQL as TIMESTAMP and the counts with gaps as floats: same draft."""
    rows = sensor_readings()
    engine = sa.create_engine(db_url)
    rows.to_sql("sensor_readings", engine, index=False)
    engine.dispose()
    out = tmp_path / "drafted.yaml"
    init("--db", db_url, "--table", "sensor_readings", "--out", str(out))
    assert_sensor_draft(load_spec(out), out.read_text(), rows)

    shown = init("--db", db_url, "--table", "sensor_readings", "--out", str(out), "--force", "--sample-rows", "60")
    assert "a draft from 60 rows of sensor_readings" in shown and "(60 rows read)" in flat(out.read_text())
    elsewhere = str(tmp_path / "nowhere.yaml")
    missing = CliRunner().invoke(main, ["spec", "init", "--db", db_url, "--table", "nowhere", "--out", elsewhere])
    assert missing.exit_code == 1 and "no table 'nowhere'" in missing.output and "sensor_readings" in missing.output


def test_the_example_seed_file_drafts_a_spec_that_loads(tmp_path: Path) -> None:
    out = tmp_path / "bike.yaml"
    init("--csv", str(ROOT / "data/seed/bike_sharing_hourly.csv.gz"), "--out", str(out))
    spec = load_spec(out)
    assert spec.name == "bike_sharing_hourly"
    # '6am' is clock text: an hour of day 0..23 read by the hour_of_day parser, the hour of the date's timestamp
    assert (spec.columns["hr"].type, spec.columns["hr"].parse) == ("int", "hour_of_day")
    assert (spec.columns["hr"].min, spec.columns["hr"].max) == (0, 23)
    assert spec.key == ["dteday", "hr"] and (spec.timestamp.column, spec.timestamp.hour) == ("dteday", "hr")
    assert spec.columns["dteday"].type == "date"
    assert spec.features.date_parts == {"dteday": ["year", "month", "dayofyear"]}
    assert spec.columns["weathersit"].values == ["Clear", "Heavy Rain", "Light Rain", "Mist"]
    assert spec.columns["weathersit"].nullable and not spec.columns["season"].nullable
    assert spec.columns["holiday"].values == ["No", "Yes"]  # text, not YAML booleans
    assert spec.target == "cnt" and spec.columns["temp"].min == -7.06
    assert "registered (r = 0.97)" in flat(out.read_text())  # named as a likely leak
    assert "it looks like the weekday of dteday" in flat(out.read_text())


def test_a_table_with_a_row_number_is_keyed_by_it(tmp_path: Path) -> None:
    rows = make_order_lines(tmp_path / "order_lines.csv", rows=400)
    text = draft_spec(pd.read_csv(tmp_path / "order_lines.csv"), name="order_lines")
    spec = DatasetSpec.model_validate(yaml.safe_load(text))
    assert spec.key == ["order_id"] and spec.timestamp.column == "sold_at"
    assert "order_id" not in spec.features.columns()  # an identifier, not an input
    assert spec.columns["channel"].nullable and spec.columns["channel"].values == ["phone", "shop", "web"]
    assert spec.columns["units"].max == rows["units"].max()
    assert spec.series == [] and "series:" not in text  # no category in the key: one series


@pytest.mark.parametrize(
    ("given", "name"),
    [("Sensor Readings.csv", "sensor_readings"), ("data/x/Rows.CSV.GZ", "rows"), ("public.Orders", "public.orders"),
     ("__", "dataset"), ("t.parquet", "t")],
)  # fmt: skip
def test_a_spec_name_is_made_from_a_table_or_file_name(given: str, name: str) -> None:
    assert spec_name(given) == name
