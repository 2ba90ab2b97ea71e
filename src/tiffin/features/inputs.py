"""Change tracking for the feature table: a digest of each day's source rows, kept beside it.

A point's history features read the rows of its own day and of the days its lookback reaches. When the feature
table is written, each day whose every dependent point was computed in that write gets the digest of its source
rows as they were read (`recordable`); a day read in a write that did not compute all of its dependents keeps
its digest only if its rows are still the ones digested, else loses it. So a recorded digest always describes the
rows every stored point depending on that day was computed from, and a window whose days all match their
digests holds exactly the features a recomputation would give: `materialize` then reads them instead.

A changed value, a late actual, a row added or removed changes its day's digest; a change of the spec, of the
feature code or of pandas changes every digest. Tracked when the window column is the timestamp's date column,
so that a row's window day is its event day; for other specs every materialization recomputes.
"""

from __future__ import annotations

import hashlib
import math
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

import tiffin
from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import history
from tiffin.storage import database

DAY = "day"
DIGEST = "digest"
POINTS = "points"
_EXACT_FLOATS = 2.0**53  # integers below it are the same number as a float: 7 and 7.0 digest alike


def tracked(spec: DatasetSpec) -> bool:
    """Whether the window column's day is each row's event day (a date column the timestamp is read from)."""
    column = spec.source.window_column
    return column == spec.timestamp.column and spec.columns[column].type == "date"


def digest_table(engine: Engine, spec: DatasetSpec) -> sa.Table:
    """The table (created if missing): one row per day, the digest of its source rows and how many points of the
    day the feature table was given."""
    metadata = sa.MetaData()
    table = sa.Table(
        f"{spec.source.table}_history_days", metadata,
        sa.Column(DAY, sa.String(10), primary_key=True),
        sa.Column(DIGEST, sa.String(80), nullable=False),
        sa.Column(POINTS, sa.Integer(), nullable=False),
        sa.Column("computed_at", sa.String(32), nullable=False),
    )  # fmt: skip
    database.create_tables(engine, metadata)
    return table


def reach_days(lookback: pd.Timedelta) -> int:
    """How many days before its own a point's features may read."""
    return math.ceil(lookback / pd.Timedelta(days=1))


def day_digests(contract: Contract, raw: pd.DataFrame) -> pd.Series:
    """The digest of each day's raw rows (an order-free sum of row hashes, and their count), indexed by the day
    as ISO text. Rows whose window value is no date are left out: the contract refuses them, no feature reads them."""
    column = contract.spec.source.window_column
    days = contract.normalise(raw, [column])[0][column]
    dated = days.notna().to_numpy()
    codes, uniques = pd.factorize(days[dated])
    sums = np.zeros(len(uniques), dtype="uint64")
    np.add.at(sums, codes, _row_hashes(raw)[dated])  # uint64 wraps: a sum modulo 2**64
    counts = np.bincount(codes, minlength=len(uniques))
    seed = _fingerprint(contract.spec)
    texts = [f"{seed}:{total:016x}:{count}" for total, count in zip(sums.tolist(), counts.tolist(), strict=True)]
    return pd.Series(texts, index=pd.DatetimeIndex(uniques).strftime("%Y-%m-%d"), dtype=object).sort_index()


def _row_hashes(raw: pd.DataFrame) -> np.ndarray:
    """pandas' hash of each row, with numbers hashed by value: a column a driver typed int in one read and float in
    another (a null among its values) digests alike."""
    numbers = {}
    for name in raw.columns:
        values = raw[name]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_integer_dtype(values):
            as_float = values.astype("float64")
            if not len(values) or as_float.abs().max() < _EXACT_FLOATS:
                numbers[name] = as_float
    frame = raw.assign(**numbers) if numbers else raw
    return pd.util.hash_pandas_object(frame, index=False, categorize=True).to_numpy()


@cache
def _code_digest() -> str:
    """The feature code's own text, and the versions whose change would change a digest or a feature."""
    parts = [Path(history.__file__).read_bytes(), Path(__file__).read_bytes(), tiffin.__version__.encode(),
             pd.__version__.encode()]  # fmt: skip
    return hashlib.sha1(b"\0".join(parts)).hexdigest()


def _fingerprint(spec: DatasetSpec) -> str:
    return hashlib.sha1((_code_digest() + spec.model_dump_json()).encode()).hexdigest()[:16]


def stored(read: pd.DataFrame) -> pd.DataFrame:
    """Rows of the digest table, indexed by day (ISO text)."""
    found = read.assign(**{DAY: read[DAY].astype(str)}).set_index(DAY).sort_index()
    return found.astype({DIGEST: object, POINTS: "int64"})


def selection(table: sa.Table, first_day: str | None, last_day: str | None) -> sa.Select:
    """The digests of the days in [first_day, last_day] (either open)."""
    day = table.c[DAY]
    conditions = [*([day >= first_day] if first_day else []), *([day <= last_day] if last_day else [])]
    return sa.select(table.c[DAY], table.c[DIGEST], table.c[POINTS]).where(*conditions)


def unchanged(now: pd.Series, before: pd.DataFrame) -> bool:
    """Whether the days read are the days recorded, each with the same rows."""
    digests = before[DIGEST]
    return bool(len(now)) and now.index.equals(digests.index) and bool((now.to_numpy() == digests.to_numpy()).all())


def complete(days: pd.Series, before: pd.DataFrame, start: str | None) -> bool:
    """Whether the feature table still holds, for each day of the window's points from `start` (`days`: one per
    stored row), at least the points it was given for that day: none deleted since."""
    wanted = before[before.index >= start[:10]] if start else before
    held = days.value_counts().reindex(wanted.index, fill_value=0)
    return bool((held.to_numpy() >= wanted[POINTS].to_numpy()).all())


def recordable(days: pd.Index, start: str | None, end: str | None, reach: int) -> np.ndarray:
    """Which days have every dependent point (its own day's and the `reach` days after's) computed by a write of
    the points in [start, end]: after `start` (its day, if it starts at midnight) and `reach` days before the last
    whole day of `end`."""
    moments = pd.to_datetime(pd.Series(days, dtype=object), format="%Y-%m-%d").to_numpy()
    ok = np.ones(len(days), dtype=bool)
    if start:
        begins = pd.Timestamp(start)
        first = begins.normalize() if begins == begins.normalize() else begins.normalize() + pd.Timedelta(days=1)
        ok &= moments >= first.to_datetime64()
    if end:
        ends = pd.Timestamp(end)
        last = ends.normalize() if len(end) <= 10 else ends.normalize() - pd.Timedelta(days=1)
        ok &= moments + np.timedelta64(reach, "D") <= last.to_datetime64()
    return ok


def changes(now: pd.Series, before: pd.DataFrame, points: pd.Series, start: str | None, end: str | None,
            reach: int) -> tuple[pd.DataFrame, list[str]]:  # fmt: skip
    """What a write of the window's points (`points`: each one's day) does to the digests: the days to record
    (digest and points, by day), and the days to forget (read, digested before, not recordable now, and whose rows
    changed or went)."""
    record = now[recordable(now.index, start, end, reach)]
    counts = points.value_counts().reindex(record.index, fill_value=0)
    differs = before.index[before[DIGEST].to_numpy() != now.reindex(before.index).to_numpy()]
    forget = [day for day in differs if day not in record.index]
    return pd.DataFrame({DIGEST: record, POINTS: counts}), forget


def written(engine: Engine, connection: sa.Connection, table: sa.Table, record: pd.DataFrame, forget: list[str],
            at: str) -> None:  # fmt: skip
    """Apply `changes` in the caller's transaction (the one that writes the features)."""
    if len(record):
        rows = [{DAY: day, DIGEST: digest, POINTS: int(points), "computed_at": at}
                for day, digest, points in record.itertuples()]  # fmt: skip
        connection.execute(database.upsert(engine, table, [DAY]), rows)
    for first in range(0, len(forget), 500):
        connection.execute(table.delete().where(table.c[DAY].in_(forget[first : first + 500])))
