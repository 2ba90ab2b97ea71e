"""The feature table: history features written to the source database, incremental and idempotent.

`materialize` reads the source rows of a window (and the history before it that the features reach back to),
puts them through the contract, computes the history features of every row with `history.history_features`,
the function training uses, and writes the rows whose features are new or changed: a re-run writes nothing, and
a late actual rewrites exactly the points whose features read it. One row per (series, event time), with the
time as ISO text (local time of the spec's zone), as the prediction log has it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import sqlalchemy as sa
from pandera.errors import SchemaErrors
from sqlalchemy.engine import Engine

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec, duration
from tiffin.features import inputs
from tiffin.features.history import history_features
from tiffin.storage import database
from tiffin.storage.bulk import BulkConnection
from tiffin.storage.clock import iso_now

EVENT_TIME = "event_time"
TIME_TEXT = "%Y-%m-%dT%H:%M:%S"
PICKED = "_tiffin_picked"  # the column of a source read saying which rows a `Pick` chose (a name unlikely in a source)


class HistoryTableBroken(ValueError):
    """The feature table holds values the contract refuses (out of their column's range, of the wrong type)."""


def table_name(spec: DatasetSpec) -> str:
    return f"{spec.source.table}_history"


def lookback(spec: DatasetSpec) -> pd.Timedelta:
    """How far before a point its features read: the longest lag, or the horizon plus the longest window."""
    history = spec.history
    horizon = duration(history.horizon)
    reaches = [duration(lag) for f in history.features for lag in f.lags]
    reaches += [horizon + duration(r.window) for f in history.features for r in f.rolling]
    return max(reaches, default=horizon)


def feature_table(engine: Engine, spec: DatasetSpec) -> sa.Table:
    """The table (created if missing): series columns and event time as the key, one column per feature."""
    metadata = sa.MetaData()
    table = sa.Table(
        table_name(spec), metadata,
        *[sa.Column(name, sa.Text(), primary_key=True) for name in spec.series],
        sa.Column(EVENT_TIME, sa.String(32), primary_key=True),
        *[sa.Column(name, sa.Float(precision=53)) for name in spec.history.names()],
        sa.Column("computed_at", sa.String(32), nullable=False),
    )  # fmt: skip
    database.create_tables(engine, metadata)
    return table


@dataclass(frozen=True)
class Materialized:
    points: int  # rows of the window, each a (series, time) point
    written: int  # new, or with a feature that changed
    unchanged: int
    rows: pd.DataFrame = field(repr=False)  # the window's feature rows, as the table now holds them
    picked: pd.DataFrame | None = field(default=None, repr=False)  # the source rows a `Pick` chose, if asked


@dataclass(frozen=True)
class Pick:
    """Source rows of the window a caller wants handed back from the read that materializing makes (a batch run
    scores them: one read where there were two): those `condition` chooses, with `columns`. The condition is
    built on `source`, the source table as the caller reflected it, which the read then selects from."""

    source: sa.Table
    condition: sa.ColumnElement[bool]
    columns: list[str]


def read_from(spec: DatasetSpec, start: str | None) -> str | None:
    """The first day the features of points from `start` read: where materializing from `start` reads from."""
    return (pd.Timestamp(start) - lookback(spec)).strftime("%Y-%m-%d") if start else None


def _validated(contract: Contract, chunks: Iterable[pd.DataFrame], with_points: bool
               ) -> tuple[pd.DataFrame, pd.DataFrame]:  # fmt: skip
    """Canonical rows whose values are known (valid and unlabeled alike: their other columns are known), and, if
    asked, the points (every row the batch runner can score: its inputs are valid, whatever its target)."""
    known, points = [], []
    for chunk in chunks:
        result = contract.validate(chunk)
        known += [result.valid, result.unlabeled]
        if not with_points:
            continue
        points += [result.valid, result.unlabeled]
        if len(refused := result.rejects["row"].unique()):  # what the serving contract (inputs only) takes of them
            points.append(contract.validate(chunk.iloc[refused], serving=True).valid)
    return _joined(contract.spec, known), _joined(contract.spec, points)


def _in_chunks(rows: pd.DataFrame, chunk_rows: int = 50_000) -> Iterator[pd.DataFrame]:
    """Rows read whole by the bulk path (Arrow; 1 M rows on SQLite: 1.5-1.8 s against 6.7-8.4 s), handed to the
    contract in chunks."""
    for first in range(0, len(rows), chunk_rows):
        yield rows.iloc[first : first + chunk_rows].reset_index(drop=True)


def known_rows(engine: Engine, spec: DatasetSpec, start: str | None, end: str | None) -> pd.DataFrame:
    """The canonical rows whose values history reads, from `start` - lookback to `end` (the API's grid)."""
    chunks = database.read_window(engine, spec, read_from(spec, start), end)
    return _validated(Contract(spec), chunks, with_points=False)[0]


def _joined(spec: DatasetSpec, frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [frame for frame in frames if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(spec.columns))


def keyed(spec: DatasetSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The feature table's key of each row: its series columns as text and its event time as ISO text."""
    keys = frame[spec.series].astype(str) if spec.series else pd.DataFrame(index=frame.index)
    return keys.assign(**{EVENT_TIME: time_texts(spec.event_time(frame))})


def time_texts(moments: pd.Series) -> pd.Series:
    """Naive moments as ISO text to the second (`TIME_TEXT`), null for NaT: numpy's formatting, 5 x as fast as pandas'
    strftime on a million rows."""
    values = moments.to_numpy(dtype="datetime64[s]")
    texts = np.datetime_as_string(values, unit="s").astype(object)
    texts[np.isnat(values)] = np.nan
    return pd.Series(texts, index=moments.index, dtype=object)


def computed(spec: DatasetSpec, known: pd.DataFrame, points: pd.DataFrame, start: str | None) -> pd.DataFrame:
    """The feature rows of the points at or after `start` (series, event time as text, features)."""
    if start:
        points = points[spec.event_time(points) >= pd.Timestamp(start)]
    rows = keyed(spec, points).join(history_features(spec, known, points))
    return rows.drop_duplicates([*spec.series, EVENT_TIME], keep="first").reset_index(drop=True)


def _stored(bulk: BulkConnection, table: sa.Table, rows: pd.DataFrame) -> pd.DataFrame:
    column = table.c[EVENT_TIME]
    return bulk.read_exact(sa.select(table).where(column >= rows[EVENT_TIME].min(), column <= rows[EVENT_TIME].max()))


def _changed(rows: pd.DataFrame, stored: pd.DataFrame, key: list[str], names: list[str]) -> np.ndarray:
    """Which rows are new or differ from the stored ones (null equal to null)."""
    merged = rows[key].merge(stored, on=key, how="left", indicator=True)
    new = (merged["_merge"] == "left_only").to_numpy()
    ours = rows[names].to_numpy(dtype="float64")
    theirs = merged[names].to_numpy(dtype="float64", na_value=np.nan)
    differs = ~((ours == theirs) | (np.isnan(ours) & np.isnan(theirs))).all(axis=1)
    return new | differs


def materialize(engine: Engine, spec: DatasetSpec, start: str | None = None, end: str | None = None, *,
                contract: Contract | None = None, reader: BulkConnection | None = None,
                pick: Pick | None = None) -> Materialized:  # fmt: skip
    """Write the history features of the window's rows; only those that are new or changed. A window none of whose
    days changed since its features were computed (`inputs`) is read from the table, not computed again.

    A caller materializing window after window may pass the spec's `contract` (its schemas built once) and a
    `reader` it keeps open where one may stay open (`BulkConnection.may_stay_open`: on PostgreSQL, where opening
    one costs ~30 ms); without, each read opens its own. Reads go by the bulk path (ADBC), which on SQLite carries
    its own SQLite: it must not have the file open while this process's other connections to it are
    (`database.engine_for`), so writes come after. `pick`: source rows of the window to hand back too
    (`Materialized.picked`), read in the same query."""
    if spec.history is None:
        raise ValueError(f"the spec {spec.name} declares no history features: nothing to materialize")
    table = feature_table(engine, spec)
    contract = contract or Contract(spec)
    days = inputs.digest_table(engine, spec) if inputs.tracked(spec) else None
    with BulkConnection.kept_or_new(engine, reader) as bulk:
        early = read_from(spec, start)
        raw, picked = _source_rows(bulk, spec, early, end, pick)
        if days is not None:
            now = inputs.day_digests(contract, raw)
            before = inputs.stored(bulk.read_exact(inputs.selection(days, early, end and end[:10])))
            if inputs.unchanged(now, before) and (rows := _held(bulk, table, contract, start, end, before)) is not None:
                return Materialized(len(rows), written=0, unchanged=len(rows), rows=rows, picked=picked)
        rows = computed(spec, *_validated(contract, _in_chunks(raw), with_points=True), start)
        if rows.empty:
            return Materialized(0, 0, 0, rows, picked)
        stored = _stored(bulk, table, rows)
    key, names = [*spec.series, EVENT_TIME], spec.history.names()
    write = rows[_changed(rows, stored, key, names)]
    record, forget = None, []
    if days is not None:
        reach = inputs.reach_days(lookback(spec))
        record, forget = inputs.changes(now, before, rows[EVENT_TIME].str[:10], start, end, reach)
    if len(write) or forget or (record is not None and len(record)):
        at = iso_now()
        with engine.begin() as connection:
            if len(write):
                insert = database.upsert(engine, table, key)
                connection.execute(insert, database.records(write.assign(computed_at=at)))
            if days is not None:
                inputs.written(engine, connection, days, record, forget, at)
    return Materialized(len(rows), written=len(write), unchanged=len(rows) - len(write), rows=rows, picked=picked)


def _source_rows(bulk: BulkConnection, spec: DatasetSpec, start: str | None, end: str | None, pick: Pick | None
                 ) -> tuple[pd.DataFrame, pd.DataFrame | None]:  # fmt: skip
    """The window's source rows (by the window column, in key order) and, if asked, those `pick` chooses: a column of
    the same read says which (its anti-join or conditions cost 9 ms on a slice of 22,500 rows, reading them again
    55 ms)."""
    query = database.window_query(bulk.engine, spec, start, end, table=pick.source if pick else None)
    if pick is None:
        return bulk.read_exact(query), None
    rows = bulk.read_exact(query.add_columns(sa.case((pick.condition, 1), else_=0).label(PICKED)), keep=[PICKED])
    chosen = rows.pop(PICKED).to_numpy() == 1
    return rows, rows.loc[chosen, pick.columns].reset_index(drop=True)


def _held(bulk: BulkConnection, table: sa.Table, contract: Contract, start: str | None, end: str | None,
          before: pd.DataFrame) -> pd.DataFrame | None:  # fmt: skip
    """The table's rows of the window's unchanged points, if it still holds them all and the contract finds nothing
    wrong with them (else None: computed again, which rewrites rows deleted or broken since)."""
    rows = _stored_window(bulk, table, contract.spec, start, end)
    if rows.empty or not inputs.complete(rows[EVENT_TIME].str[:10], before, start):
        return None
    names = contract.spec.history.names()
    return rows if contract.surely_valid(rows[names], contract.history_schema) else None


def _stored_window(bulk: BulkConnection, table: sa.Table, spec: DatasetSpec, start: str | None,
                   end: str | None) -> pd.DataFrame:  # fmt: skip
    """The table's rows of the points in [start, end], as `computed` gives them (its columns, float features), in
    no particular order: their callers look them up by key, and on PostgreSQL a sort of a slice's rows cost the
    server 13 ms of a 17 ms read (2026-12-08)."""
    return _as_features(spec, bulk.read_exact(_window_select(table, spec, start, end)))


def _window_select(table: sa.Table, spec: DatasetSpec, start: str | None, end: str | None) -> sa.Select:
    """The key and features of the table's rows whose event time lies in [start, end] (a date end takes in the whole
    day), in no order."""
    column = table.c[EVENT_TIME]
    wanted = [table.c[name] for name in [*spec.series, EVENT_TIME, *spec.history.names()]]
    return sa.select(*wanted).where(*database.Window.parse(start, end).conditions(column, text_sep="T"))


def _as_features(spec: DatasetSpec, found: pd.DataFrame) -> pd.DataFrame:
    """Rows read from the table, the features as float64 (a column the driver gave as float64 is kept, not copied)."""
    return found.astype({name: "float64" for name in spec.history.names() if found[name].dtype != "float64"})


def read(engine: Engine, spec: DatasetSpec, start: str | None = None, end: str | None = None) -> pd.DataFrame:
    """Materialized feature rows whose event time lies in the window [start, end] (ISO text; a date end takes in
    the whole day), ordered by series and time."""
    table = feature_table(engine, spec)
    query = _window_select(table, spec, start, end)
    with engine.connect() as connection:
        rows = connection.execute(query.order_by(*[table.c[k] for k in spec.series], table.c[EVENT_TIME])).all()
    found = _as_features(spec, pd.DataFrame(rows, columns=[c.name for c in query.selected_columns]))
    names = spec.history.names()
    try:  # the contract over the features: a table written by something else, or by a bug, is not scored with
        Contract(spec).history_schema.validate(found[names], lazy=True)
    except SchemaErrors as broken:
        cases = broken.failure_cases
        raise HistoryTableBroken(
            f"{table.name}: {len(cases)} values break the contract, e.g. "
            + "; ".join(f"{c.column} {c.check}: {c.failure_case}" for c in cases.head(3).itertuples())
        ) from None
    return found


def no_rows(spec: DatasetSpec) -> pd.DataFrame:
    """No rows of the table: its key and feature columns, as `computed` and `read` give them."""
    keys = {name: pd.Series(dtype=object) for name in [*spec.series, EVENT_TIME]}
    return pd.DataFrame(keys | {name: pd.Series(dtype="float64") for name in spec.history.names()})


def by_key(spec: DatasetSpec, stored: pd.DataFrame) -> pd.DataFrame:
    """Rows of the table indexed by their key: the series columns as text and the event time as a moment (its text
    read once here: `_moments_of`). What a caller attaching many chunks holds, so that each lookup costs the chunk's
    rows, not the window's, and looks up moments, never formatting a chunk's times as text (a third of a chunk's
    lookup, 2026-12-08)."""
    moments = _moments_of(stored[EVENT_TIME])
    known = ~np.isnat(moments)
    features = stored.loc[known, spec.history.names()]
    features.index = _key_index(spec, stored, moments)[known]
    return features


def _moments_of(texts: pd.Series) -> np.ndarray:
    """The moment each event time text of the table spells, to the second; NaT for a text that is not exactly
    `time_texts`' spelling of one (written by something else), as a lookup by the text itself found nothing for it:
    the parse alone takes '2024-1-1T0:0:0', and reads '...T00:00:60' as the next minute."""
    moments = pd.to_datetime(texts, format=TIME_TEXT, errors="coerce")
    exact = (time_texts(moments) == texts).to_numpy()
    return np.where(exact, moments.to_numpy(dtype="datetime64[s]"), np.datetime64("NaT", "s"))


def _key_index(spec: DatasetSpec, rows: pd.DataFrame, moments: np.ndarray) -> pd.Index:
    """The key of each of `rows`, whose event times are `moments`: its series columns as text, and the moment."""
    times = pd.Index(moments, name=EVENT_TIME)
    if not spec.series:
        return times
    return pd.MultiIndex.from_arrays([*(rows[name].astype(str) for name in spec.series), times])


def attach(spec: DatasetSpec, frame: pd.DataFrame, stored: pd.DataFrame) -> pd.DataFrame:
    """`frame` with its history features from `stored` (rows of the table, or `by_key` of them); null for a point
    not in it. Event times are looked up to the second, as the table keys them (`time_texts`)."""
    if list(stored.index.names) != [*spec.series, EVENT_TIME]:
        stored = by_key(spec, stored)
    moments = spec.event_time(frame).to_numpy(dtype="datetime64[s]")
    found = stored.reindex(_key_index(spec, frame, moments))
    return frame.assign(**{name: found[name].to_numpy(dtype="float64") for name in found.columns})
