"""Named parsers that turn raw source values into canonical ones.

A spec names them (`parse: hour_of_day` on an int or float column; `fill_missing: {using: weekday_name, from:
<a date column>}`); a user can also give `package.module:function`. Each takes and returns a pandas Series; a value
that cannot be parsed becomes NA, and the contract reports it with the raw value. A parser reads each value on its
own: the contract calls it on a column's distinct values (`on_distinct`).
"""

from __future__ import annotations

import datetime
import importlib
import re
from collections.abc import Callable

import numpy as np
import pandas as pd

Parser = Callable[[pd.Series], pd.Series]

_CLOCK_HOUR = re.compile(r"^\s*(\d{1,2})\s*([ap])\.?\s*m\.?\s*$", re.IGNORECASE)
WEEKDAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def _clock_hour(value: object) -> float:
    """'6am' -> 6, '12am' -> 0, '12pm' -> 12, '11 PM' -> 23; anything else -> NaN."""
    match = _CLOCK_HOUR.match(str(value))
    if not match:
        return np.nan
    hour, half = int(match.group(1)), match.group(2).lower()
    if not 1 <= hour <= 12:
        return np.nan
    return float(hour % 12 + (12 if half == "p" else 0))


_MAY_HOLD_BOOLEANS = ("mixed", "mixed-integer")  # pandas' inference for booleans among other values
_BOOLEANS = (bool, np.bool_)


def map_unique(raw: pd.Series, function: Callable[[object], object]) -> pd.Series:
    """`raw.map(function)`, calling it once per distinct value: raw columns repeat a few values."""
    if raw.dtype == object and pd.api.types.infer_dtype(raw, skipna=True) in _MAY_HOLD_BOOLEANS:
        booleans = raw.map(type).isin(_BOOLEANS).to_numpy()
        if booleans.any():  # factorize takes False for 0 and True for 1: booleans are mapped apart
            mapped = np.empty(len(raw), dtype=object)
            mapped[~booleans] = map_unique(raw[~booleans], function).to_numpy(dtype=object)
            mapped[booleans] = [function(value) for value in raw[booleans]]
            return pd.Series(mapped, index=raw.index)
    try:
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    except TypeError:  # unhashable values (a JSON object or array where a scalar belongs)
        return pd.Series([None if _missing(v) else function(v) for v in raw], index=raw.index, dtype=object)
    mapped = np.array([function(value) for value in uniques] + [None], dtype=object)
    return pd.Series(mapped[codes], index=raw.index)  # code -1 (missing) takes the trailing None


def on_distinct(raw: pd.Series, function: Parser) -> pd.Series:
    """`function(raw)` for a `function` that reads each value alone, called on the distinct values only where they
    are few (a day's 24 hours repeat its date; a database's TEXT column repeats a few values). A null value takes
    what `function` makes of None. Booleans are not folded into 0 and 1 (factorize takes them as equal): a column
    holding one is read whole."""
    if raw.dtype != object or len(raw) <= _FEW:
        return function(raw)
    if pd.api.types.infer_dtype(raw, skipna=True) in _MAY_HOLD_BOOLEANS and raw.map(type).isin(_BOOLEANS).any():
        return function(raw)
    try:
        codes, uniques = pd.factorize(raw, use_na_sentinel=True)
    except TypeError:  # unhashable values (a JSON object or array where a scalar belongs)
        return function(raw)
    if len(uniques) * 2 >= len(raw):
        return function(raw)
    found = function(pd.Series([*uniques, None], dtype=object))
    return pd.Series(found.to_numpy()[codes], index=raw.index, dtype=found.dtype)  # code -1 takes the None's


def _missing(value: object) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def without_booleans(raw: pd.Series) -> pd.Series:
    """True is not the number 1 here: booleans become NA (and so "unreadable" where present)."""
    if pd.api.types.is_bool_dtype(raw):
        return pd.Series(None, index=raw.index, dtype=object)
    if raw.dtype != object:
        return raw
    booleans = map_unique(raw, lambda v: isinstance(v, bool | np.bool_)).astype(bool)
    return raw.where(~booleans, None) if booleans.any() else raw


def to_numbers(raw: pd.Series) -> pd.Series:
    """Numbers as float64, NaN where a value is no number; a number beyond float64's range (a JSON or SQL integer
    of 400 digits) is NaN too, never an OverflowError. Text repeating a few values (a database's TEXT column) is
    read once per distinct value."""
    return on_distinct(raw, _numbers)


_FEW = 64  # below this, factorising costs more than it saves


def _numbers(raw: pd.Series) -> pd.Series:
    try:
        return pd.to_numeric(raw, errors="coerce").astype("float64")
    except (OverflowError, TypeError, ValueError):
        return map_unique(raw, _float_or_nan).astype("float64")


def _float_or_nan(value: object) -> float:
    try:
        return float(value)
    except (OverflowError, TypeError, ValueError):
        return np.nan


def hour_of_day(raw: pd.Series) -> pd.Series:
    """Hours as numbers (6, 6.0, '6') or clock text ('6am'); the contract checks the range."""
    raw = without_booleans(raw)
    numeric = to_numbers(raw)
    text = raw.notna() & numeric.isna()
    if text.any():
        numeric[text] = map_unique(raw[text], _clock_hour).astype("float64")
    return numeric


def weekday_name(dates: pd.Series) -> pd.Series:
    """The three-letter English weekday of each date ('Mon' … 'Sun'); None where there is no date."""
    names = np.array([*WEEKDAYS, None], dtype=object)
    return pd.Series(names[dates.dt.dayofweek.fillna(len(WEEKDAYS)).astype("int64").to_numpy()], index=dates.index)


def hour(moments: pd.Series) -> pd.Series:
    """The hour (0-23) of each datetime: an hour column that must agree with its timestamp."""
    return moments.dt.hour.astype("float64")


# The documented text forms of dates and moments (ISO 8601 / RFC 3339), nothing looser: pandas' ISO8601 parser
# also reads '2012' or '2012-06' as a day, which would score a request for a day nobody asked about.
ISO_DAY = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]00:00(?::00(?:\.0{1,9})?)?)?", re.ASCII)
ISO_MOMENT = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d{1,9})?)?(?:Z|[+-]\d{2}:?\d{2})?", re.ASCII)


def iso_text(raw: pd.Series, pattern: re.Pattern) -> pd.Series:
    """Which values may be read as a date or moment: text of `pattern`, or a date/time object (a database's)."""

    def readable(value: object) -> bool:
        if isinstance(value, str):
            return pattern.fullmatch(value) is not None
        return isinstance(value, datetime.date | np.datetime64)  # datetime and pd.Timestamp are dates too

    if pd.api.types.is_datetime64_any_dtype(raw):
        return pd.Series(True, index=raw.index)
    return map_unique(raw, readable).astype(bool)


_OFFSET = re.compile(r"(?:Z|[+-]\d{2}:?\d{2})$", re.ASCII)


def local_moments(raw: pd.Series, zone: str) -> tuple[pd.Series, np.ndarray]:
    """Moments as wall-clock time in `zone` (naive datetime64), and which of them do not exist there.

    A moment with an offset (text ending in Z or +HH:MM, or an aware datetime) is converted to the zone; a naive
    one already is local time. Local time is what the model sees (the hour people live by). A naive time in the
    hour daylight saving skips does not exist and is flagged; the hour it repeats is read as the clock shows it,
    so a series' two readings of it share a key (the contract keeps the first).
    """
    has_offset = map_unique(raw, carries_offset).astype(bool).to_numpy()
    moments = pd.Series(pd.NaT, index=raw.index, dtype="datetime64[ns]")
    if has_offset.any():
        aware = pd.to_datetime(raw[has_offset], errors="coerce", format="ISO8601", utc=True)
        moments[has_offset] = aware.dt.tz_convert(zone).dt.tz_localize(None).astype("datetime64[ns]")
    naive = ~has_offset & raw.notna().to_numpy()
    missing_hour = np.zeros(len(raw), dtype=bool)
    if naive.any():
        local = pd.to_datetime(raw[naive], errors="coerce", format="ISO8601").astype("datetime64[ns]")
        exists = local.dt.tz_localize(zone, ambiguous=np.ones(len(local), dtype=bool), nonexistent="NaT").notna()
        missing_hour[naive] = (local.notna() & ~exists).to_numpy()
        moments[naive] = local
    return moments.where(~missing_hour), missing_hour


def carries_offset(value: object) -> bool:
    """Text ending in Z or +HH:MM, or an aware datetime: a moment that says its own offset."""
    if isinstance(value, str):
        return _OFFSET.search(value.strip()) is not None
    return getattr(value, "tzinfo", None) is not None


# Parsers read a raw value of an int or float column (`parse:`); fill functions derive a column from another
# (`fill_missing:` / `agrees_with:`). Each is also open to a user's `package.module:function`.
PARSERS: dict[str, Parser] = {"hour_of_day": hour_of_day}
FILLS: dict[str, Parser] = {"weekday_name": weekday_name, "hour": hour}
_USER_FUNCTION = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


def resolve(name: str, known: dict[str, Parser]) -> Parser:
    """A function by its short name in `known` (PARSERS or FILLS), or a user's `package.module:function`."""
    if name in known:
        return known[name]
    if not _USER_FUNCTION.match(name):
        kind, other = ("parser", FILLS) if known is PARSERS else ("fill function", PARSERS)
        hint = f" ({name!r} is a {'fill function' if known is PARSERS else 'parser'})" if name in other else ""
        raise ValueError(
            f"unknown {kind} {name!r}{hint}: use one of {', '.join(sorted(known))} or 'package.module:function'"
        )
    module, _, attribute = name.partition(":")
    try:
        function = getattr(importlib.import_module(module), attribute)
    except (ImportError, AttributeError) as missing:
        raise ValueError(f"{name!r} cannot be imported: {missing}") from None
    if not callable(function):
        raise ValueError(f"{name!r} is not a function")
    return function
