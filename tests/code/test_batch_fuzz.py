"""Fault injection: hostile values of every SQL type in every column, inserted by SQL into the source table.

Whatever the values, every run terminates, every row ends in exactly one of `predictions` or
`prediction_rejects`, `batch_runs` counts what the tables hold, and a second run is quiet. On SQLite a column
holds any type (text, integers of any size, reals with NaN and infinities, BLOBs, NULL); on PostgreSQL each
column holds its own type's hostile values (text without NUL, which PostgreSQL refuses).

Examples: `TIFFIN_FUZZ_EXAMPLES` (default 25 a database); under CI=true the examples are derandomized (the same
every run); elsewhere hypothesis picks new ones, and `--hypothesis-seed=N` replays a run.
"""

from __future__ import annotations

import os

import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiffin.core.spec import DatasetSpec
from tiffin.jobs.batch import BatchJob
from tiffin.storage import database as db

from ..conftest import IN_CI
from .test_batch import TAG
from .test_batch_hostile import run_bounded

EXAMPLES = int(os.environ.get("TIFFIN_FUZZ_EXAMPLES", "25"))
ROWS = 12
KEY_TEXT = ["%", "5%$", "5%%&", "'", "''", "\\", "\\'", '"', ";--", "9pm%a", "", " ", "é", "6am", "1e19", "-0", "NaN"]
TEXT = st.one_of(
    st.sampled_from([*KEY_TEXT, "Infinity", "-Infinity", "garbage", "2012-13-45", "2012", "20120601", "Clear "]),
    st.text(max_size=10),
)
NUMBERS = st.one_of(
    st.integers(min_value=-(2**63), max_value=2**63 - 1),  # SQLite's integers are 64-bit: larger ones come as text
    st.integers(min_value=-(2**70), max_value=2**70).map(str),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["9223372036854775808", 2**63 - 1, -(2**63), 1e308, -0.0, 5e-324]),
)
ANY_SQLITE = st.one_of(TEXT.map(lambda s: s.replace("\x00", "")), st.text(max_size=6), NUMBERS, st.binary(max_size=6),
                       st.none())  # fmt: skip


def hostile_rows(raw: pd.DataFrame, dialect: str) -> st.SearchStrategy[list[dict]]:
    """The first ROWS rows of `raw`, each with 0-3 columns replaced by a hostile value; the keys stay unique."""
    base = raw.head(ROWS).astype(object).where(raw.head(ROWS).notna(), None).to_dict("records")
    columns = list(raw.columns)
    numeric = {name for name in columns if pd.api.types.is_numeric_dtype(raw[name])}

    def value_for(name: str) -> st.SearchStrategy:
        if dialect == "sqlite":
            return ANY_SQLITE
        if name in numeric:  # PostgreSQL: a float column takes NaN and the infinities, an integer column int64
            return st.floats(allow_nan=True) if raw[name].dtype.kind == "f" else st.integers(-(2**63), 2**63 - 1)
        return TEXT.map(lambda s: s.replace("\x00", ""))

    @st.composite
    def rows(draw: st.DrawFn) -> list[dict]:
        out = []
        for index, row in enumerate(base):
            row = dict(row)
            for name in draw(st.lists(st.sampled_from(columns), max_size=3, unique=True)):
                row[name] = draw(value_for(name) if name != "hr" else st.sampled_from(KEY_TEXT))
            if row["hr"] in {r["hr"] for r in out if r["dteday"] == row["dteday"]} or row["hr"] is None:
                row["hr"] = f"{index}%{index}'"  # keys stay unique and non-null (the source's primary key)
            if row["dteday"] is None:
                row["dteday"] = base[index]["dteday"]
            out.append(row)
        return out

    return rows()


def fresh_source(url: str, spec: DatasetSpec, raw: pd.DataFrame) -> sa.Engine:
    engine = db.engine_for(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    tables.drop_all(engine)
    db.source_table(engine, spec, like=raw.head(ROWS))
    return engine


def check_invariants(url: str, spec: DatasetSpec, rows: int, run_id: str) -> None:
    engine = sa.create_engine(url)
    key = ", ".join(f'"{k}"' for k in spec.key)
    with engine.connect() as connection:
        scored = connection.execute(sa.text("SELECT COUNT(*) FROM predictions WHERE run_id = :r"), {"r": run_id})
        rejected = connection.execute(
            sa.text(f"SELECT COUNT(*) FROM (SELECT DISTINCT {key} FROM prediction_rejects WHERE run_id = :r) AS k"),
            {"r": run_id},
        )
        counts = scored.scalar_one(), rejected.scalar_one()
        ledger = connection.execute(
            sa.text("SELECT rows_scored, rows_rejected, rows_read, status FROM batch_runs WHERE run_id = :r"),
            {"r": run_id},
        ).one()
    engine.dispose()
    assert sum(counts) == rows, f"{rows} rows in the source, {counts} scored/rejected"
    assert (ledger.rows_scored, ledger.rows_rejected, ledger.rows_read) == (*counts, rows)
    assert ledger.status in ("success", "partial")


@pytest.mark.parametrize("dialect", ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def test_hostile_values_of_every_type_in_every_column(dialect, tmp_path, request, bike_spec, bike_raw, scorer):
    url = f"sqlite:///{tmp_path / 'fuzz.db'}" if dialect == "sqlite" else request.getfixturevalue("postgres_db")

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=IN_CI, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])  # fmt: skip
    @given(rows=hostile_rows(bike_raw, dialect), chunk_rows=st.sampled_from([1, 3, 100]))
    def one_example(rows: list[dict], chunk_rows: int) -> None:
        engine = fresh_source(url, bike_spec, bike_raw)
        insert = sa.text(  # by the driver, as a client's SQL would: no SQLAlchemy type conversion on the way
            f"INSERT INTO rentals ({', '.join(rows[0])}) VALUES ({', '.join(':' + name for name in rows[0])})"
        )
        with engine.begin() as connection:
            connection.execute(insert, rows)
        first = run_bounded(BatchJob(engine, scorer, TAG, chunk_rows=chunk_rows), seconds=60)
        check_invariants(url, bike_spec, len(rows), first.run_id)
        again = run_bounded(BatchJob(engine, scorer, TAG, chunk_rows=chunk_rows), seconds=60)
        assert (again.exit_code, again.rows_read) == (0, 0)
        engine.dispose()

    one_example()
