"""The feature table (issue 15): materialized in the source database, incremental and idempotent, on SQLite and
PostgreSQL, with the values training computes."""

from __future__ import annotations

import pandas as pd
import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from tiffin.cli.main import main
from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.features import store
from tiffin.features.history import history_features
from tiffin.storage import database

from ..conftest import ROOT


@pytest.fixture
def history_spec():
    return load_spec(ROOT / "specs/bike_sharing.yaml")


@pytest.fixture
def seeded(db_url: str, history_spec, bike_raw: pd.DataFrame):
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")].reset_index(drop=True)
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, raw)
    yield engine, raw
    engine.dispose()


def test_a_rerun_writes_nothing_and_a_late_actual_rewrites_exactly_what_reads_it(seeded, history_spec) -> None:
    engine, raw = seeded
    first = store.materialize(engine, history_spec, "2011-02-01", "2011-02-28")
    february = raw["dteday"].between("2011-02-01", "2011-02-28").sum()
    assert first.points == february and first.written == february
    assert store.materialize(engine, history_spec, "2011-02-01", "2011-02-28").written == 0
    before = store.read(engine, history_spec, "2011-02-01", "2011-02-28T23:59:59")

    late = raw[(raw["dteday"] == "2011-02-10")].iloc[12]  # an actual corrected after the fact
    table = database.source_table(engine, history_spec)
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.dteday == late["dteday"], table.c.hr == late["hr"])
                           .values(cnt=int(late["cnt"]) + 100))  # fmt: skip
    again = store.materialize(engine, history_spec, "2011-02-01", "2011-02-28")
    after = store.read(engine, history_spec, "2011-02-01", "2011-02-28T23:59:59")
    names = history_spec.history.names()
    differs = (after[names] != before[names]) & ~(after[names].isna() & before[names].isna())
    moved = set(after.loc[differs.any(axis=1), store.EVENT_TIME])
    hour = history_spec.event_time(Contract(history_spec).validate(raw.loc[[late.name]]).valid).iloc[0]
    reading = {hour + pd.Timedelta(hours=h) for h in [*range(1, 25), 168]}  # lags 1-3, 24, 168; the 24 h mean
    existing = set(pd.to_datetime(after[store.EVENT_TIME]))
    assert {pd.Timestamp(t) for t in moved} == reading & existing
    assert again.written == len(reading & existing)


def test_the_table_holds_what_training_computes(seeded, history_spec) -> None:
    engine, raw = seeded
    store.materialize(engine, history_spec)
    result = Contract(history_spec).validate(raw)
    expected = history_features(history_spec, result.valid).assign(
        event_time=history_spec.event_time(result.valid).dt.strftime(store.TIME_TEXT)
    )
    stored = store.read(engine, history_spec, "2011-01-01", "2011-02-28T23:59:59")
    names = history_spec.history.names()
    merged = expected.merge(stored, on="event_time", suffixes=("", "_stored"))
    assert len(merged) == len(expected)
    for name in names:
        assert merged[name].equals(merged[f"{name}_stored"].astype("float64")), name


def test_the_command_says_what_it_wrote(db_url: str, history_spec, bike_raw: pd.DataFrame) -> None:
    database.seed(database.engine_for(db_url), history_spec, bike_raw.head(500))
    args = ["features", "materialize", "--spec", "specs/bike_sharing.yaml", "--db", db_url]
    first = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "rentals_history: 500 points, 500 written (new or changed), 0 unchanged" in first.output
    second = CliRunner().invoke(main, args, catch_exceptions=False)
    assert "0 written (new or changed), 500 unchanged" in second.output
    row_only = ["features", "materialize", "--spec", "specs/bike_sharing_rows.yaml", "--db", db_url]
    refused = CliRunner().invoke(main, row_only)
    assert refused.exit_code != 0 and "declares no `history`" in refused.output


def test_the_contract_covers_the_features_read_back(seeded, history_spec) -> None:
    """A value no lag of the column could take (a count of -5) is refused when the table is read, not scored."""
    engine, _ = seeded
    store.materialize(engine, history_spec)
    schema = Contract(history_spec).history_schema
    assert set(schema.columns) == set(history_spec.history.names())
    table = store.feature_table(engine, history_spec)
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.event_time == "2011-02-03T08:00:00").values(cnt_lag_1h=-5.0))
    with pytest.raises(store.HistoryTableBroken, match=r"cnt_lag_1h greater_than_or_equal_to.*-5"):
        store.read(engine, history_spec, "2011-02-01", "2011-02-28")
