"""The prediction log as monitoring reads it: the stored rows (the API's) and the batch's by reference.

The batch's rows come from `predlog.batch_rows` (its predictions joined to the source table by key, raw): here
their inputs go through the contract, as they did when the batch scored them, and their history features come
from the feature table, where the batch runner took them. The result has the log table's columns and form
(inputs as stored, dates as ISO text), whichever way a row was logged.
"""

from __future__ import annotations

import pandas as pd
from sqlalchemy.engine import Engine

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import store
from tiffin.storage import predlog


def read(engine: Engine, spec: DatasetSpec, start: str, end: str, *, source: str | None = None) -> pd.DataFrame:
    """Logged predictions whose event time lies in [start, end] (a date-only end: that whole day), in the order
    they were logged: the log's columns (`id` null for a batch row), then the inputs as the log stores them (the
    contract's `normalise` makes them canonical). `source`: only the API's or only the batch's rows."""
    stored = predlog.read_stored(engine, spec, start, end, source=source)
    referenced = _batch(engine, spec, start, end) if source in (None, predlog.BATCH) else None
    parts = [part for part in (stored, referenced) if part is not None and len(part)]
    if len(parts) == 2:
        # One order for both: when each row was logged (ISO text to the microsecond on every path).
        logged = pd.concat(parts, ignore_index=True).sort_values("logged_at", kind="stable", ignore_index=True)
    else:
        logged = parts[0] if parts else stored
    if not logged.empty:
        logged["event_time"] = pd.to_datetime(logged["event_time"])
    return logged


def _batch(engine: Engine, spec: DatasetSpec, start: str, end: str) -> pd.DataFrame | None:
    rows = predlog.batch_rows(engine, spec, start, end)
    if rows is None or rows.empty:
        return None
    names = list(dict.fromkeys([*spec.key, *spec.input_columns]))
    canonical, _ = Contract(spec).normalise(rows[[n for n in names if n in rows.columns]], names)
    if spec.history is not None:
        canonical = store.attach(spec, canonical, store.read(engine, spec, start, end))
    return predlog.as_logged(spec, canonical, rows)
