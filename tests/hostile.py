"""Hostile records generated from a spec (hypothesis), for the contract's and the API's fuzz tests."""

from __future__ import annotations

import hypothesis.strategies as st
import pandas as pd

from tiffin.core.spec import ColumnSpec, DatasetSpec


def as_frame(records: list[dict]) -> pd.DataFrame:
    """Records as a table of raw values (object columns: pandas would refuse a 400-digit integer itself)."""
    names = list(dict.fromkeys(name for record in records for name in record))
    return pd.DataFrame({name: pd.Series([r.get(name) for r in records], dtype=object) for name in names})


MISSING = object()


def hostile(column: ColumnSpec) -> st.SearchStrategy:
    """Values for one field: its boundaries, overflow, wrong types, nesting, unicode, dates near right."""
    edges = [e for bound in (column.min, column.max) if bound is not None for e in (bound, bound - 1, bound + 1)]
    return st.one_of(
        st.sampled_from(edges or [0]),
        st.sampled_from(column.values or ["x"]),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=12),
        st.from_regex(r"\A[0-9]{4}-[0-9]{1,2}-[0-9]{1,2}([T ][0-9]{2}:[0-9]{2}(:[0-9]{2})?)?\Z"),
        st.booleans(),
        st.none(),
        st.just(MISSING),
        st.lists(st.integers(), max_size=2),
        st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
    )


def hostile_records(
    spec: DatasetSpec, base: dict | list[dict], min_size: int = 1, max_size: int = 4
) -> st.SearchStrategy:
    """Requests of `min_size` to `max_size` records, each a copy of `base` (or of one of them) with up to three
    fields hostile or absent."""
    bases = base if isinstance(base, list) else [base]

    def record(draw: st.DrawFn) -> dict:
        row = dict(draw(st.sampled_from(bases)))
        for name in draw(st.lists(st.sampled_from(spec.input_columns), max_size=3, unique=True)):
            value = draw(hostile(spec.columns[name]))
            if value is MISSING:
                row.pop(name, None)
            else:
                row[name] = value
        return row

    return st.lists(st.composite(record)(), min_size=min_size, max_size=max_size)
