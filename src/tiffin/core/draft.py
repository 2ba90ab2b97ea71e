"""A first draft of a dataset spec, inferred from the rows of a real table (`tiffin spec init`).

Per column it infers the type (int, float, category, date, datetime, string), the observed range of numbers, the
closed set of a category, nullability and an example. For the table it proposes a key (the smallest combination of
one or two columns unique over the rows where they are present, preferably a datetime and a category), a timestamp,
a target, the features, a naive-baseline grouping and evaluation slices. What only a person can know is guessed and
marked with `# DECIDE:` comments; the draft as written loads as a `DatasetSpec`.

From pandera's schema inference (`pandera.pandas.infer_schema`, one DataFrame in, a `DataFrameSchema` out) this takes,
per column: the dtype class (int, float, bool, datetime, pandas category), `nullable`, and the statistics of the
checks it infers: `greater_than_or_equal_to` / `less_than_or_equal_to` (the observed minimum and maximum of floats and
of datetimes; an integer's are taken exact, as pandera reports them as floats) and `isin` (the categories of a pandas
categorical column). The contract enforces the spec with
pandera, so the draft's ranges and nullability are measured the way pandera measures them. pandera sees text as
`object`: it infers no dates written as text, no clock hours ('6am'), no closed set of text values, and no key. Those
are inferred here, and pandera is given a copy of the rows in which such text is already parsed, so it measures
their span too. Text is read by the same ISO forms and parsers the contract uses (`tiffin.core.normalise`).

Pure: a DataFrame in, YAML text out. Reading the table and writing the file are the command line's job.
"""

from __future__ import annotations

import datetime
import functools
import itertools
import numbers
import re
import textwrap
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pandera.pandas as pa
import yaml
from pandera import dtypes

from tiffin.core import normalise
from tiffin.core.spec import ColumnSpec

MAX_CATEGORIES = 50  # more distinct text values than this is free text (a string), not a closed set
MAX_SLICE_VALUES = 30  # a category with more segments than this makes an unreadable slice table
MAX_PAIR_COLUMNS = 20  # without a date column, pairs are tried among this many candidate key columns only
DATE_PARTS = {"datetime": ["hour", "dayofweek", "month"], "date": ["year", "month", "dayofyear"]}
DEFAULT_ESTIMATOR = "sklearn.ensemble.HistGradientBoostingRegressor"
_LINE = 118


def spec_name(text: str) -> str:
    """A spec name from a table or file name: lowercase, [a-z0-9_.-], starting with a letter or digit."""
    stem = re.split(r"[\\/]", text.strip())[-1].lower()
    stem = re.sub(r"(\.(gz|bz2|xz|zip|zst))?$", "", stem)
    stem = re.sub(r"\.(csv|tsv|txt|parquet|pq)$", "", stem)
    stem = re.sub(r"[^a-z0-9_.-]+", "_", stem)
    return re.sub(r"^[^a-z0-9]+", "", stem).rstrip("_.-") or "dataset"


@dataclass
class ColumnDraft:
    """What was inferred about one column."""

    name: str
    type: str
    present: int
    missing: int
    distinct: int
    minimum: int | float | None = None
    maximum: int | float | None = None
    values: list[str] | None = None
    parse: str | None = None
    example: Any = None
    notes: list[str] = field(default_factory=list)
    decide: list[str] = field(default_factory=list)
    hour_of_day: bool = False  # an int 0..23: the hour that goes with a date

    @property
    def nullable(self) -> bool:
        return self.missing > 0

    def spec(self) -> dict[str, Any]:
        """The column's entry in the spec: a ColumnSpec (checked as the spec will be), written without defaults."""
        column = ColumnSpec(type=self.type, nullable=self.nullable, min=self.minimum, max=self.maximum,
                            values=self.values, parse=self.parse, example=self.example)  # fmt: skip
        return column.model_dump(exclude_defaults=True)

    def summary(self) -> str:
        if self.values is not None:
            shown = ", ".join(self.values[:8]) + (", …" if len(self.values) > 8 else "")
            detail = f"{len(self.values)} values: {shown}"
        elif self.minimum is not None:
            detail = f"{self.minimum} .. {self.maximum}"
        else:
            detail = f"{self.distinct} distinct"
        missing = f", {self.missing} missing" if self.missing else ""
        return f"{self.name}: {self.type}{f' ({self.parse})' if self.parse else ''}, {detail}{missing}"


@dataclass
class Draft:
    """A draft spec: the inferred columns, the guessed roles, and what a person must decide."""

    name: str
    table: str
    rows: int
    columns: dict[str, ColumnDraft]
    key: list[str]
    key_duplicates: int
    key_alternatives: list[str]
    timestamp: str
    hour: str | None
    target: str
    numeric: list[str]
    categorical: list[str]
    date_parts: dict[str, list[str]]
    baseline_group_by: list[str]
    slices: list[str]
    series: str | None
    timezone_note: str
    seed_file: str | None = None
    source: str = ""
    decisions: dict[str, str] = field(default_factory=dict)

    def to_yaml(self) -> str:
        return _render(self)

    def summary(self) -> list[str]:
        """What was inferred, one line each (the command prints it)."""
        duplicates = f", {self.key_duplicates} duplicate keys" if self.key_duplicates else ", unique"
        timestamp = f"{self.timestamp} + hour {self.hour}" if self.hour else self.timestamp
        lines = [
            f"{self.rows} rows, {len(self.columns)} columns",
            f"key: [{', '.join(self.key)}]{duplicates}",
            f"timestamp: {timestamp} ({self.columns[self.timestamp].type})",
            f"target (a guess): {self.target}",
        ]
        if self.series:
            lines.append(f"series (a hint): {self.series}")
        return lines + [column.summary() for column in self.columns.values()]

    def to_decide(self) -> list[str]:
        """What a person must decide before the spec is used (the DECIDE comments, one line each)."""
        found = [f"{where}: {text}" for where, text in self.decisions.items()]
        found += [f"columns.{column.name}: {text}" for column in self.columns.values() for text in column.decide]
        if self.series:
            found.append(f"series: one series per {self.series}: per-series slices and verdicts")
        if self.timezone_note:
            found.append(self.timezone_note)
        return found


def draft_spec(
    frame: pd.DataFrame, *, name: str, table: str | None = None, seed_file: str | None = None, source: str = ""
) -> str:
    """The YAML text of a draft spec for the rows of `frame` (see `infer`)."""
    return infer(frame, name=name, table=table, seed_file=seed_file, source=source).to_yaml()


def infer(
    frame: pd.DataFrame, *, name: str, table: str | None = None, seed_file: str | None = None, source: str = ""
) -> Draft:
    """Infer a draft spec from the rows of a table.

    `name` is the spec's name, `table` the source table (default: the name), `seed_file` the file a person would
    seed that table from, `source` where the rows came from (said in the header comment).
    """
    if frame.empty or not len(frame.columns):
        raise ValueError("no rows to draft a spec from: the table is empty")
    frame = frame.copy()
    frame.columns = [str(column) for column in frame.columns]
    if frame.columns.duplicated().any():
        raise ValueError(f"duplicate column names: {sorted(set(frame.columns[frame.columns.duplicated()]))}")
    readings = {column: _read(frame[column]) for column in frame.columns}
    typed = pd.DataFrame({column: reading.values for column, reading in readings.items()}, index=frame.index)
    schema = pa.infer_schema(typed)
    columns = {column: _column(column, reading, schema.columns[column]) for column, reading in readings.items()}
    draft = _roles(columns, typed, name=name, table=table or name, rows=len(frame))
    draft.seed_file, draft.source = seed_file, source
    return draft


# -- reading the values -------------------------------------------------------------------------------------------


@dataclass
class _Reading:
    """A column's values as their type (text dates parsed, clock hours as numbers), and what they were read as."""

    values: pd.Series
    kind: str  # empty | moment | date | bool | category | hour | number | text
    note: str = ""


def _read(raw: pd.Series) -> _Reading:
    present = raw.dropna()
    if present.empty:
        return _Reading(pd.Series(np.nan, index=raw.index, dtype=object), "empty")
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        local = raw.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[ns]")
        return _Reading(local, "moment", f"stored with a zone ({raw.dt.tz}); read as UTC")
    if pd.api.types.is_datetime64_any_dtype(raw):
        return _Reading(raw.astype("datetime64[ns]"), "moment")
    if pd.api.types.is_bool_dtype(raw):
        return _Reading(raw, "bool")
    if isinstance(raw.dtype, pd.CategoricalDtype):
        return _Reading(raw, "category")
    if pd.api.types.is_numeric_dtype(raw):
        return _Reading(raw, "number")
    try:
        uniques = pd.unique(present)
    except TypeError:  # unhashable values (JSON objects or arrays): text
        return _Reading(normalise.map_unique(raw, str), "text")
    if all(isinstance(value, datetime.date | np.datetime64) for value in uniques):
        moments = pd.to_datetime(raw, errors="coerce", utc=True).dt.tz_localize(None).astype("datetime64[ns]")
        days = all(isinstance(value, datetime.date) and not isinstance(value, datetime.datetime) for value in uniques)
        return _Reading(moments, "date" if days else "moment")
    if all(isinstance(value, bool | np.bool_) for value in uniques):
        return _Reading(raw, "bool")
    if all(isinstance(value, numbers.Number) for value in uniques):
        return _Reading(pd.to_numeric(raw, errors="coerce"), "number")
    if all(isinstance(value, str) for value in uniques):
        return _read_text(raw, pd.Series(uniques, dtype=object))
    return _Reading(normalise.map_unique(raw, str), "text")


def _read_text(raw: pd.Series, uniques: pd.Series) -> _Reading:
    """Text that is all ISO dates, all ISO date-times, or all clock hours is read as such; else it stays text."""
    for kind, pattern in (("date", normalise.ISO_DAY), ("moment", normalise.ISO_MOMENT)):
        if normalise.iso_text(uniques, pattern).all():
            moments = pd.to_datetime(raw, errors="coerce", format="ISO8601", utc=True)
            if moments.notna().sum() == raw.notna().sum():
                offsets = normalise.map_unique(uniques, normalise.carries_offset).astype(bool).any()
                note = "text with UTC offsets, read as UTC" if offsets else ""
                return _Reading(moments.dt.tz_localize(None).astype("datetime64[ns]"), kind, note)
    hours = normalise.hour_of_day(uniques)
    clock = normalise.to_numbers(uniques).isna()
    if clock.any() and hours.notna().all() and ((hours % 1 == 0) & hours.between(0, 23)).all():
        return _Reading(normalise.hour_of_day(raw), "hour", "clock text ('6am') read by the hour_of_day parser")
    return _Reading(raw.astype(object), "text")


def _column(name: str, reading: _Reading, inferred: pa.Column) -> ColumnDraft:
    """One column's entry, from pandera's inferred column (dtype, nullability, range) and the reading."""
    values = reading.values
    present = values.dropna()
    stats = {key: value for check in inferred.checks for key, value in (check.statistics or {}).items()}
    missing = int(values.isna().sum()) if inferred.nullable else 0
    column = ColumnDraft(name, "string", present=len(present), missing=missing, distinct=_distinct(present))
    if reading.note:
        column.notes.append(reading.note)
    kind, dtype = reading.kind, inferred.dtype
    if kind == "empty":
        column.decide.append(f"{name} is empty in every row read: give it its type")
        return column
    if kind in ("date", "moment") or dtypes.is_datetime(dtype):
        low, high = pd.Timestamp(stats["min_value"]), pd.Timestamp(stats["max_value"])
        midnight = bool((present == present.dt.normalize()).all())
        column.type = "date" if kind == "date" or midnight else "datetime"
        shown = (lambda moment: moment.date().isoformat()) if column.type == "date" else _moment_text
        column.notes.append(f"{shown(low)} to {shown(high)}")
        column.example = shown(pd.Timestamp(present.iloc[0]))
    elif kind in ("bool", "category") or dtypes.is_bool(dtype) or dtypes.is_category(dtype):
        allowed = stats.get("allowed_values") or present.unique().tolist()
        column.type, column.values = "category", sorted({str(value) for value in allowed})
        column.example = str(present.iloc[0])
    elif kind == "hour" or dtypes.is_int(dtype) or (dtypes.is_float(dtype) and _whole(present)):
        column.type, column.parse = "int", "hour_of_day" if kind == "hour" else None
        # pandera reports the range as floats, which round beyond 2**53: an integer's own extremes are exact.
        column.minimum, column.maximum = int(present.min()), int(present.max())
        column.example = int(present.iloc[0])
        if dtypes.is_float(dtype) and kind != "hour":
            column.notes.append("whole numbers, stored as floats")
        clock = column.minimum >= 0 and 18 <= column.maximum <= 23 and column.distinct >= 12
        column.hour_of_day = kind == "hour" or clock
    elif dtypes.is_numeric(dtype):
        column.type = "float"
        column.minimum, column.maximum = float(stats["min_value"]), float(stats["max_value"])
        column.example = float(f"{float(present.iloc[0]):.6g}")
    elif column.distinct <= MAX_CATEGORIES and column.distinct * 2 <= column.present:
        column.type, column.values = "category", sorted(str(value) for value in present.unique())
        column.example = str(present.iloc[0])
    else:
        column.example = str(present.iloc[0])[:60]
        column.notes.append(f"{column.distinct} distinct values")
    if column.missing:
        column.notes.append(f"{column.missing} missing")
    return column


def _distinct(present: pd.Series) -> int:
    try:
        return int(present.nunique())
    except TypeError:
        return int(present.astype(str).nunique())


def _whole(present: pd.Series) -> bool:
    values = present.to_numpy(dtype="float64")
    return bool(np.isfinite(values).all() and (values == np.floor(values)).all() and (abs(values) < 2**53).all())


def _moment_text(moment: pd.Timestamp) -> str:
    return moment.isoformat(sep="T", timespec="seconds" if moment.microsecond == 0 else "microseconds")


# -- the roles: key, timestamp, target, features, evaluation ------------------------------------------------------


def _roles(columns: dict[str, ColumnDraft], typed: pd.DataFrame, *, name: str, table: str, rows: int) -> Draft:
    decisions: dict[str, str] = {}
    times = [c for c in columns.values() if c.type in ("date", "datetime")]
    has_date = any(c.type == "date" for c in times)
    hours = [c.name for c in columns.values() if c.hour_of_day and has_date]
    key, duplicates, alternatives = _key(columns, typed, hours)
    decisions["key"] = (
        f"[{', '.join(key)}] is not unique: {duplicates} rows repeat a key already seen (the contract keeps the first)"
        if duplicates
        else f"confirm that [{', '.join(key)}] identifies a row (unique over the rows read)"
    )

    timestamp, hour = _timestamp(columns, key, hours)
    if timestamp is None:
        timestamp = key[0]
        decisions["timestamp"] = (
            "no column reads as a date or date-time: the pipeline orders, splits and windows rows by the "
            "timestamp, so the table needs one (give a date column, or a date plus an hour)"
        )
    else:
        kind = f"the date {timestamp} plus the hour {hour}" if hour else f"the {columns[timestamp].type} {timestamp}"
        decisions["timestamp"] = f"when a row happened: {kind} (guessed)"

    target, why = _target(columns, key, timestamp, hour)
    decisions["target"] = f"the column the model predicts. Guessed: {target} ({why}): a person must choose it"
    companions = _companions(columns, typed, target)
    decisions["never_features"] = "every column known only after the fact: as an input it would leak the answer" + (
        f"; these move with the target: {', '.join(companions)}" if companions else ""
    )
    key_id = key[0] if len(key) == 1 and columns[key[0]].type in ("int", "string") else None
    numeric, categorical, left_out = [], [], {}
    for column in columns.values():
        if column.name in (target, timestamp):
            continue
        if column.name == key_id:
            left_out[column.name] = "the key: an identifier, not a property"
        elif column.type in ("int", "float"):
            numeric.append(column.name)
        elif column.type == "category":
            categorical.append(column.name)
        elif column.type in ("date", "datetime"):
            left_out[column.name] = "another date: a feature only as date_parts, if it is known when predicting"
        else:
            left_out[column.name] = "free text: neither numeric nor categorical"
    dated = columns[timestamp].type in DATE_PARTS and timestamp != target
    date_parts = {timestamp: DATE_PARTS[columns[timestamp].type]} if dated else {}
    decisions["features"] = (
        "the model inputs: every column known when a prediction is asked for; remove what is not"
        + (f" (left out: {', '.join(left_out)})" if left_out else "")
    )

    categories = [c for c in columns.values() if c.type == "category" and c.values and c.name != target]
    series = next((name for name in key if columns[name].type == "category"), None)
    baseline, baseline_why = _baseline(columns, categories, series, hour, typed, target)
    decisions["baseline"] = (
        f"the naive model to beat predicts the mean target per {', '.join(baseline)} ({baseline_why}); "
        "declared columns only (no date parts)"
    )
    slices = [c.name for c in categories if 2 <= len(c.values or []) <= MAX_SLICE_VALUES]
    decisions["slices"] = "segments the evaluation reports apart (categories of at most 30 values; numbers need bins)"
    note = ""
    if any("UTC" in n for c in times for n in c.notes):
        note = "timezone: the times were read as UTC; if the data's clock is local time, name its IANA zone"
    elif times:
        note = "timezone: the times carry no UTC offset; name the IANA zone of the data's clock (e.g. Europe/Paris)"
    return Draft(
        name=name,
        table=table,
        rows=rows,
        columns=columns,
        key=key,
        key_duplicates=duplicates,
        key_alternatives=alternatives,
        timestamp=timestamp,
        hour=hour,
        target=target,
        numeric=numeric,
        categorical=categorical,
        date_parts=date_parts,
        baseline_group_by=baseline,
        slices=slices,
        series=series,
        timezone_note=note,
        decisions=decisions,
    )


_IDENTIFIER = re.compile(r"(?:^|_)(?:id|key|no|nr|number)$|[a-z]Id$|ID$")


def _single_rank(column: ColumnDraft) -> int:
    """How good a key a column unique on its own makes (lower is better; pairs rank between, see `_key`)."""
    if column.type in ("int", "string") and _IDENTIFIER.search(column.name.strip()):
        return 0  # named as an identifier
    if column.type in ("datetime", "date"):
        return 1 if column.type == "datetime" else 2
    if column.type == "string":
        return 5
    if column.type == "int" and column.maximum is not None and column.minimum is not None:
        return 6 if column.maximum - column.minimum + 1 <= 2 * column.present else 7  # a row number, else a measure
    return 9


def _pair_preference(first: ColumnDraft, second: ColumnDraft, hours: list[str]) -> int:
    kinds = {first.type, second.type}
    if kinds == {"datetime", "category"} or (
        "date" in kinds and (first.name in hours or second.name in hours) and kinds <= {"date", "int"}
    ):
        return 0
    if kinds == {"date", "category"}:
        return 1
    if kinds & {"date", "datetime"}:
        return 2
    return 3


def _key(columns: dict[str, ColumnDraft], typed: pd.DataFrame, hours: list[str]) -> tuple[list[str], int, list[str]]:
    """The smallest set of one or two columns unique over the rows where they are present, preferably a datetime
    and a category (or a date and its hour), with its count of duplicate keys (0); else the best such pair and
    the duplicates it has. Columns that measure (floats, integers neither an hour nor unique) are no candidates."""

    @functools.cache  # the same sets are counted for the choice and again for the alternatives: one scan each
    def duplicates(names: tuple[str, ...]) -> int:
        return int(typed[list(names)].dropna().duplicated().sum())

    candidates = [
        c
        for c in columns.values()
        if c.present
        and (
            c.type in ("date", "datetime", "category", "string")
            or (c.type == "int" and (c.name in hours or c.distinct == c.present))
        )
    ]
    times = [c for c in candidates if c.type in ("date", "datetime")]
    pool = candidates if times else candidates[:MAX_PAIR_COLUMNS]
    pairs = []
    for position, (first, second) in enumerate(itertools.combinations(pool, 2)):
        if times and not {first.type, second.type} & {"date", "datetime"}:
            continue
        if first.type not in ("date", "datetime") and second.type in ("date", "datetime"):
            first, second = second, first
        names = (first.name, second.name)
        pairs.append((_pair_preference(first, second, hours), duplicates(names), position, names))
    # Unique sets, best first: an identifier, a datetime or a date alone; then a datetime (or date) with a category
    # or its hour; then text or an integer alone; then any other pair.
    unique = sorted(
        [(_single_rank(c), position, (c.name,)) for position, c in enumerate(candidates)
         if c.distinct == c.present and not duplicates((c.name,))]
        + [((3, 4, 8, 9)[preference], position, names) for preference, found, position, names in pairs if not found]
    )  # fmt: skip
    if unique:
        chosen, found = unique[0][2], 0
        others = [names for _, _, names in unique[1:] if not set(chosen) <= set(names)][:2]
    elif pairs:
        ranked = sorted(pairs)
        chosen, found = ranked[0][3], ranked[0][1]
        others = [p[3] for p in ranked[1:3]]
    else:
        fallback = max(candidates or columns.values(), key=lambda c: c.distinct)
        chosen = (fallback.name,)
        found = duplicates(chosen)
        others = []
    alternatives = [
        f"[{', '.join(names)}]" + (f" ({count} duplicates)" if (count := duplicates(names)) else "") for names in others
    ]
    return list(chosen), found, alternatives


def _timestamp(columns: dict[str, ColumnDraft], key: list[str], hours: list[str]) -> tuple[str | None, str | None]:
    """The datetime (in the key first, then the most complete), else a date plus its hour, else a date."""
    order = [*key, *(name for name in columns if name not in key)]
    moments = sorted(
        (columns[name].missing, position, name)
        for position, name in enumerate(order)
        if columns[name].type == "datetime"
    )
    if moments:
        return moments[0][2], None
    days = sorted((columns[name].missing, position, name) for position, name in enumerate(order)
                  if columns[name].type == "date")  # fmt: skip
    if not days:
        return None, None
    ranked_hours = sorted(hours, key=lambda name: (name not in key, not columns[name].parse, -columns[name].distinct))
    return days[0][2], (ranked_hours[0] if ranked_hours else None)


def _target(columns: dict[str, ColumnDraft], key: list[str], timestamp: str, hour: str | None) -> tuple[str, str]:
    """A number, not in the key: the last one with missing values (a target not known yet), else the last one."""
    numbers_ = [c.name for c in columns.values() if c.type in ("int", "float") and c.name not in (timestamp, hour)]
    free = [name for name in numbers_ if name not in key]
    with_gaps = [name for name in free if columns[name].missing]
    if with_gaps:
        return with_gaps[-1], "a number with missing values, as a target not yet known is"
    if free:
        return free[-1], "the last numeric column"
    if numbers_:
        return numbers_[-1], "the only numbers are in the key"
    others = [name for name in columns if name not in (timestamp, hour)]
    return (others or [timestamp])[-1], "no numeric column: the last column; a regression target is a number"


def _baseline(
    columns: dict[str, ColumnDraft],
    categories: list[ColumnDraft],
    series: str | None,
    hour: str | None,
    typed: pd.DataFrame,
    target: str,
) -> tuple[list[str], str]:
    """One declared column to group the naive model's means by: the series, else the category that explains most of
    the target, else the hour, else a small integer, else the timestamp (a poor one: said)."""
    if series:
        return [series], "the category in the key: one mean per series"
    small = [c for c in categories if len(c.values or []) <= MAX_SLICE_VALUES]
    if small and columns[target].type in ("int", "float"):
        shares = {c.name: _explained(typed[c.name], typed[target]) for c in small}
        best = max(shares, key=lambda name: shares[name])
        return [best], f"the category that explains most of the target's variance in the rows read, {shares[best]:.0%}"
    if small:
        return [small[0].name], "a category"
    if hour:
        return [hour], "the hour of day"
    ints = [c.name for c in columns.values() if c.type == "int" and c.distinct <= MAX_SLICE_VALUES and c.name != target]
    if ints:
        return [ints[0]], "an integer with few values"
    return [next(iter(columns))], "nothing better found: choose a grouping"


def _explained(groups: pd.Series, target: pd.Series) -> float:
    """The share of the target's variance that the group means explain (eta squared)."""
    labels = groups.astype(str).where(groups.notna())
    frame = pd.DataFrame({"group": labels, "y": pd.to_numeric(target, errors="coerce")}).dropna()
    total = float(((frame["y"] - frame["y"].mean()) ** 2).sum())
    if frame.empty or total == 0:
        return 0.0
    means = frame.groupby("group")["y"].transform("mean")
    return float(((means - frame["y"].mean()) ** 2).sum()) / total


def _companions(columns: dict[str, ColumnDraft], typed: pd.DataFrame, target: str) -> list[str]:
    """Numbers that move with the target (|r| >= 0.9): often known only after the fact, like the target."""
    if columns[target].type not in ("int", "float"):
        return []
    found = []
    for column in columns.values():
        if column.name != target and column.type in ("int", "float") and not column.hour_of_day:
            pair = typed[[column.name, target]].apply(pd.to_numeric, errors="coerce").dropna()
            if len(pair) > 2 and pair.std().min() > 0:
                r = float(pair.corr().iloc[0, 1])
                if abs(r) >= 0.9:
                    found.append(f"{column.name} (r = {r:.2f})")
    return found


# -- the YAML ------------------------------------------------------------------------------------------------------


def _flow(value: Any) -> str:
    """One value as a single line of flow-style YAML (quoted where YAML would read it as something else)."""
    text = yaml.safe_dump(value, default_flow_style=True, sort_keys=False, allow_unicode=True, width=2**31)
    return text.removesuffix("\n").removesuffix("\n...").strip()


def _entry(key: str, value: Any) -> str:
    return f"{_flow(key)}: {_flow(value)}"


def _comment(text: str, *, indent: str = "", decide: bool = False) -> list[str]:
    lead = f"{indent}# DECIDE: " if decide else f"{indent}# "
    return textwrap.wrap(text, _LINE, initial_indent=lead, subsequent_indent=f"{indent}#   " if decide else lead)


def _render(draft: Draft) -> str:
    columns = draft.columns
    decide = draft.decisions
    out = _comment(
        f"Drafted by `tiffin spec init` from {draft.source or draft.table} ({draft.rows} rows read). Every guess is "
        "marked DECIDE: review each, widen the observed ranges, then try the rows with `tiffin validate --spec`."
    )
    out += [_entry("name", draft.name), _entry("description", f"Drafted from {draft.table}: say what a row is."), ""]

    out.append("source:")
    if draft.seed_file:
        out += _comment("the table `tiffin db seed` loads the file into", indent="  ", decide=True)
    out.append(f"  {_entry('table', draft.table)}")
    out += _comment("the column the ingest window filters on (the timestamp)", indent="  ", decide=True)
    out.append(f"  {_entry('window_column', draft.timestamp)}")
    if draft.seed_file:
        out.append(f"  {_entry('seed_file', draft.seed_file)}")
    out.append("")

    if draft.key_duplicates:
        key_note = (
            f"not unique: {draft.key_duplicates} duplicate keys in the {draft.rows} rows read (the contract keeps the "
            "first row of each key and rejects the others); choose the columns that identify a row"
        )
        out += _comment(key_note, decide=True)
    else:
        out += _comment(f"unique over the {draft.rows} rows read; confirm it identifies a row", decide=True)
    if draft.key_alternatives:
        out += _comment(f"other candidates: {', '.join(draft.key_alternatives)}")
    out.append(_entry("key", draft.key))
    out += _comment(decide["timestamp"], decide=True)
    out.append(_entry("timestamp", {"column": draft.timestamp, **({"hour": draft.hour} if draft.hour else {})}))
    if draft.timezone_note:
        out += _comment(f"{draft.timezone_note} (date parts are then local time), e.g.:", decide=True)
        zoned = {"column": draft.timestamp, **({"hour": draft.hour} if draft.hour else {}), "timezone": "Europe/Paris"}
        out.append(f"#   {_entry('timestamp', zoned)}")
    if draft.series:
        out += _comment(
            f"several series share the timestamp, one per {draft.series}: each is judged apart in the evaluation",
            decide=True,
        )
        out.append(_entry("series", [draft.series]))
    out += _comment(decide["target"], decide=True)
    out.append(_entry("target", draft.target))
    out += _comment(decide["never_features"], decide=True)
    out.append(_entry("never_features", []))
    out.append("")

    out += _comment(
        f"Types, nullability and closed sets as read from {draft.rows} rows. min/max are the observed range: widen "
        "them to what is plausible, or a new row outside it is rejected. Add `description:` to each."
    )
    out.append("columns:")
    for column in columns.values():
        for text in column.decide:
            out += _comment(text, indent="  ", decide=True)
        if column.type == "category" and column.name != draft.target and _weekdays(column) and draft.date_parts:
            out += _comment(
                f"it looks like the weekday of {draft.timestamp}: add fill_missing and agrees_with "
                f"{{using: weekday_name, from: {draft.timestamp}}}",
                indent="  ",
                decide=True,
            )
        line = f"  {_entry(column.name, column.spec())}"
        if column.notes:
            line += f"  # {'; '.join(column.notes)}"
        out.append(line)
    out.append("")

    out += _comment(decide["features"], decide=True)
    out.append("features:")
    out.append(f"  {_entry('numeric', draft.numeric)}")
    out.append(f"  {_entry('categorical', draft.categorical)}")
    out.append(f"  {_entry('date_parts', draft.date_parts)}")
    out.append("")

    target = columns[draft.target]
    counts = target.type == "int" and target.minimum is not None and target.minimum >= 0
    params = {"loss": "poisson", "random_state": 42} if counts else {"random_state": 42}
    out.append("model:")
    out.append(f"  {_entry('estimator', DEFAULT_ESTIMATOR)}")
    if counts:
        out += _comment("the target is a count (whole, never negative): Poisson loss", indent="  ", decide=True)
    out.append(f"  {_entry('params', params)}  # params.yaml `train:` overrides these")
    out.append("")

    out.append("evaluation:")
    out += _comment(decide["baseline"], indent="  ", decide=True)
    out.append(f"  {_entry('baseline_group_by', draft.baseline_group_by)}")
    out += _comment(decide["slices"], indent="  ", decide=True)
    if draft.slices:
        out.append("  slices:")
        out += [f"    - {_flow({'column': name})}" for name in draft.slices]
    else:
        out.append(f"  {_entry('slices', [])}")
    return "\n".join(out) + "\n"


def _weekdays(column: ColumnDraft) -> bool:
    return bool(column.values) and set(column.values or []) <= set(normalise.WEEKDAYS)
