"""The dataset spec: everything Tiffin needs to know about one table, as configuration.

A user brings a new dataset by writing one of these (see `specs/bike_sharing.yaml`) and pointing
`params.yaml: spec` at it. The contract, the features, the model and the evaluation slices are all
derived from it, so training, the API and the batch runner cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from tiffin.core import normalise
from tiffin.core.config_errors import ConfigError, explain, read_mapping

ColumnType = Literal["int", "float", "category", "date", "datetime", "string"]
DatePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, use_attribute_docstrings=True)


class SpecError(ConfigError):
    """A spec that cannot be used: the file, the key path and what is allowed there."""


class FillSpec(_Strict):
    """A column as a named function of another (`using` from `from`), e.g. the weekday of the date: to fill a
    missing value (`fill_missing`), or to check that a given one agrees (`agrees_with`)."""

    using: str
    """A fill function: `weekday_name` (a date's three-letter weekday), `hour` (a datetime's hour), or your own
    `package.module:function`."""
    from_: str = Field(alias="from")
    """The declared column it is computed from."""

    @field_validator("using")
    @classmethod
    def _is_a_fill_function(cls, name: str) -> str:
        normalise.resolve(name, normalise.FILLS)
        return name


class ColumnSpec(_Strict):
    """One column of the table: its type and the rules every row must meet."""

    type: ColumnType
    """`int`, `float`, `category` (a closed set of `values`), `date`, `datetime` (ISO 8601, with or without an
    offset) or `string` (free text)."""
    nullable: bool = False
    """Whether a row may leave it empty. A nullable target means rows whose target has not arrived (unlabeled)."""
    min: int | float | None = None
    """Smallest allowed value (int and float columns); `null`: no lower bound."""
    max: int | float | None = None
    """Largest allowed value (int and float columns); `null`: no upper bound."""
    values: list[str] | None = None
    """The allowed values of a `category` column (required for it, refused for the others)."""
    parse: str | None = None
    """How raw values of an int or float column are read: `hour_of_day` (6, '6', '6am'), or your own
    `package.module:function` (a Series in, a Series out, each value read on its own: it is called on a column's
    distinct values). Other column types are read as they are."""
    fill_missing: FillSpec | None = None
    """Fill an empty value from another column (e.g. the weekday from the date)."""
    agrees_with: FillSpec | None = None
    """A given value must equal `using(from)`, else the row is refused."""
    description: str = ""
    """What the column means; charts name the target by it."""
    example: Any = None
    """A typical value: it builds the example request of `/docs.json` and the service's warm-up request."""

    @model_validator(mode="after")
    def _categories_are_closed(self) -> ColumnSpec:
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs its closed set of `values`")
        if self.type != "category" and self.values:
            raise ValueError("`values` only applies to category columns")
        return self

    @field_validator("parse")
    @classmethod
    def _parse_reads_numbers(cls, name: str | None, info: ValidationInfo) -> str | None:
        kind = info.data.get("type")
        if name is not None and kind not in ("int", "float"):
            raise ValueError(f"`parse` applies to int and float columns only, not to a {kind} column")
        if name is not None:
            normalise.resolve(name, normalise.PARSERS)
        return name


class SourceSpec(_Strict):
    """Where the rows come from."""

    table: str
    """The table in the source database (`TIFFIN_DB_URL`) the pipeline ingests and the batch scores."""
    window_column: str
    """The declared column that windows are taken on (ingest, batch, monitoring): a date or datetime."""
    seed_file: str | None = None
    """A CSV (.csv, .csv.gz) or Parquet file `tiffin db seed` loads into `table`."""


class TimestampSpec(_Strict):
    """When a row happened: one datetime column, or a date column plus an hour column; and where.

    `timezone` (IANA, e.g. Europe/Paris) is the zone of the data's clock: naive times are local time there,
    times with an offset are converted to it, and date parts are taken from local time. Without it, naive
    times are taken as they are and times with an offset are converted to UTC.
    """

    column: str
    """The date or datetime column."""
    hour: str | None = None
    """An int column holding the hour (0-23), when `column` is a date."""
    timezone: str | None = None
    """IANA zone of the data's clock (e.g. `Europe/Paris`); without it naive times are taken as they are."""

    @property
    def columns(self) -> list[str]:
        """The columns a row's time is read from."""
        return [self.column, *filter(None, [self.hour])]

    @model_validator(mode="after")
    def _zone_is_known(self) -> TimestampSpec:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone {self.timezone!r} is no IANA zone (e.g. Europe/Paris, UTC)") from None
        return self


class FeatureSpec(_Strict):
    """The model's inputs: declared columns, and parts of dates."""

    numeric: list[str] = []
    """Int and float columns used as numbers."""
    categorical: list[str] = []
    """Category columns (one-hot or native categories, as the estimator takes them)."""
    date_parts: dict[str, list[DatePart]] = {}
    """Per date or datetime column, the parts used: `year`, `month`, `day`, `dayofweek`, `dayofyear`, `hour`
    (local time when the spec has a timezone)."""

    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.date_parts]


Aggregate = Literal["mean", "min", "max", "sum", "std"]


def duration(text: str) -> pd.Timedelta:
    """'1h', '24h', '7d', '30min' as a Timedelta; a clear error for anything else."""
    try:
        value = pd.Timedelta(text)
    except (ValueError, TypeError):
        raise ValueError(f"{text!r} is no duration: write e.g. 1h, 24h, 7d") from None
    if value <= pd.Timedelta(0):
        raise ValueError(f"{text!r}: a duration must be positive")
    return value


class RollingSpec(_Strict):
    """Aggregates of a column over `window`, ending `horizon` before the predicted time."""

    window: str
    """The window's length, a whole number of steps (`24h`, `7d`)."""
    agg: list[Aggregate]
    """Aggregates over it: `mean`, `min`, `max`, `sum`, `std`."""


class HistoryFeatureSpec(_Strict):
    """Past values of one numeric column of the same series: lags and rolling windows."""

    column: str
    """A declared int or float column (not in `never_features`)."""
    lags: list[str] = []
    """How long before the predicted time to read the value (`24h`, `168h`); none shorter than the horizon."""
    rolling: list[RollingSpec] = []
    """Windows ending `horizon` before the predicted time."""

    def lag_name(self, lag: str) -> str:
        """`<column>_lag_24h`: the one naming of a lag (training, the feature table, the log, the contract)."""
        return f"{self.column}_lag_{lag}"

    def window_name(self, agg: str, window: str) -> str:
        """`<column>_mean_24h`: the one naming of a window's aggregate."""
        return f"{self.column}_{agg}_{window}"

    def names(self) -> list[str]:
        """The feature columns this makes, lags first."""
        lags = [self.lag_name(lag) for lag in self.lags]
        return lags + [self.window_name(agg, r.window) for r in self.rolling for agg in r.agg]


class HistorySpec(_Strict):
    """History features per series, known `horizon` before the predicted time (see `tiffin.features.history`).

    `step` is the data's time step (the grid the history is read on: a missing step is a gap, read as null).
    """

    horizon: str = "1h"
    """How long before the predicted time its history is known (the forecast horizon)."""
    step: str = "1h"
    """The data's time step: the grid history is read on."""
    features: list[HistoryFeatureSpec]
    """The columns with history, their lags and windows."""
    stale_after: str = "48h"
    """Online: a series whose last known value before t - horizon is older than this is stale."""
    when_stale: Literal["null", "refuse"] = "null"
    """A stale series' features are null and counted in the answer (`null`), or the request is refused naming
    the series (`refuse`)."""

    @model_validator(mode="after")
    def _sees_no_future(self) -> HistorySpec:
        horizon, step = duration(self.horizon), duration(self.step)
        for given in [self.horizon, self.stale_after, *(lag for f in self.features for lag in f.lags),
                      *(r.window for f in self.features for r in f.rolling)]:  # fmt: skip
            if duration(given) % step:
                raise ValueError(f"{given} is not a whole number of steps ({self.step})")
        for feature in self.features:
            early = [lag for lag in feature.lags if duration(lag) < horizon]
            if early:
                raise ValueError(
                    f"history of {feature.column}: lags {early} are shorter than the horizon {self.horizon}: "
                    "they would read values not known when the prediction is made"
                )
        return self

    def names(self) -> list[str]:
        return [name for feature in self.features for name in feature.names()]


class ModelSpec(_Strict):
    """The estimator: any scikit-learn regressor, by import path."""

    estimator: str = "sklearn.ensemble.HistGradientBoostingRegressor"
    """Import path of the estimator class."""
    params: dict[str, Any] = {}
    """Its parameters; params.yaml's `train` section overrides them."""


class SliceSpec(_Strict):
    """An evaluation slice: one segment per category, or per bin of a numeric column."""

    column: str
    """The declared column sliced on."""
    name: str | None = None
    """The slice's title in reports (default: the column)."""
    bins: list[float] | None = None
    """Bin edges for a numeric column; without them, one segment per value."""
    labels: list[str] | None = None
    """Names of the bins (one fewer than the edges)."""

    @property
    def title(self) -> str:
        return self.name or self.column


class EvaluationSpec(_Strict):
    """How a model is judged: against a naive baseline, overall and per slice."""

    baseline_group_by: list[str]
    """Required. The naive baseline predicts the training mean of the target per group of these columns."""
    history_baseline_lag: str | None = None
    """With `history`: a second naive model, the target this long before (`168h`: the same hour last week), per
    series; one of the target's history lags."""
    slices: list[SliceSpec] = []
    """Segments reported and judged apart (each series is one too)."""


class DatasetSpec(_Strict):
    """One table: where it is, its columns and their rules, what is predicted from what, how it is judged."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    """The dataset's name, and the model's in the store: lowercase letters, digits, `_ . -`."""
    description: str = ""
    """One line on what the table holds."""
    source: SourceSpec
    """Where the rows come from."""
    key: list[str]
    """The columns that make a row unique (e.g. the time and the series): loaded once, scored once."""
    timestamp: TimestampSpec
    """When a row happened: the one event time of training, serving, batch and monitoring."""
    target: str
    """The declared column the model predicts."""
    series: list[str] = []
    """Columns that tell one series from another (a sensor, a store): one model for all, judged per series too."""
    never_features: list[str] = []
    """Columns never used as inputs: known only after the fact, they would leak the target."""
    columns: dict[str, ColumnSpec]
    """Every column of the table, by name, with its type and rules. Unknown keys anywhere are refused."""
    features: FeatureSpec
    """The model's inputs."""
    history: HistorySpec | None = None
    """Past values per series (lags, rolling windows), known a forecast horizon before the predicted time."""
    model: ModelSpec = ModelSpec()
    """The estimator and its parameters."""
    evaluation: EvaluationSpec
    """The baseline and the slices."""
    unknown_fields: Literal["refuse", "ignore"] = "refuse"
    """A request field the contract does not name: refused (a 400 naming it), or ignored."""

    @model_validator(mode="after")
    def _references_are_declared(self) -> DatasetSpec:
        referenced = {
            "key": self.key,
            "timestamp": self.timestamp.columns,
            "target": [self.target],
            "series": self.series,
            "never_features": self.never_features,
            "features": self.features.columns(),
            "baseline_group_by": self.evaluation.baseline_group_by,
            "slices": [s.column for s in self.evaluation.slices],
            "source.window_column": [self.source.window_column],
        }
        for where, names in referenced.items():
            missing = [n for n in names if n not in self.columns]
            if missing:
                raise ValueError(f"{where} names undeclared columns {missing}: declare them under `columns`")
        leaked = set(self.features.columns()) & {self.target, *self.never_features}
        if leaked:
            raise ValueError(f"{sorted(leaked)} can never be model inputs (target or never_features)")
        if self.history:
            self._history_reads_known_numbers()
        elif self.evaluation.history_baseline_lag:
            raise ValueError("evaluation.history_baseline_lag needs `history` (the target's lags)")
        for name, col in self.columns.items():
            for rule, derived in (("fill_missing", col.fill_missing), ("agrees_with", col.agrees_with)):
                if derived and derived.from_ not in self.columns:
                    raise ValueError(f"{name}.{rule}.from names an undeclared column")
        return self

    def _history_reads_known_numbers(self) -> None:
        for feature in self.history.features:
            column = self.columns.get(feature.column)
            if column is None:
                raise ValueError(f"history names undeclared column {feature.column!r}")
            if column.type not in ("int", "float"):
                raise ValueError(f"history of {feature.column}: only numeric columns have lags and windows")
            if feature.column in self.never_features:
                raise ValueError(f"history of {feature.column}: a never_features column is never read, not even late")
        lag = self.evaluation.history_baseline_lag
        target_lags = [lag for f in self.history.features if f.column == self.target for lag in f.lags]
        if lag is not None and lag not in target_lags:
            raise ValueError(
                f"evaluation.history_baseline_lag {lag} must be one of the target's history lags {target_lags}"
            )
        clashes = set(self.history.names()) & set(self.columns)
        if clashes:
            raise ValueError(f"history feature names {sorted(clashes)} clash with declared columns")

    @property
    def input_columns(self) -> list[str]:
        """What a caller sends to predict: every declared column but the target and leakage columns."""
        hidden = {self.target, *self.never_features}
        return [name for name in self.columns if name not in hidden]

    @property
    def history_columns(self) -> list[str]:
        """The history features a model of this spec reads (looked up, never sent); none without `history`."""
        return self.history.names() if self.history else []

    def history_not_in(self, other: DatasetSpec) -> list[str]:
        """The history features a model of this spec reads that rows prepared for `other`'s model lack (a
        challenger in shadow behind a champion of `other`)."""
        return sorted(set(self.history_columns) - set(other.history_columns))

    def target_lag(self, lag: str) -> str:
        """The name of the target's history feature `lag` (the history baseline reads it)."""
        return next(f for f in self.history.features if f.column == self.target and lag in f.lags).lag_name(lag)

    @property
    def target_label(self) -> str:
        """How charts name the target: its description in the spec, else its name."""
        return self.columns[self.target].description or self.target

    @property
    def slices(self) -> list[SliceSpec]:
        """The evaluation slices, and one per series column not sliced already: each series is a segment."""
        sliced = {s.column for s in self.evaluation.slices if s.bins is None}
        return [*self.evaluation.slices, *(SliceSpec(column=name) for name in self.series if name not in sliced)]

    def event_time(self, frame: pd.DataFrame) -> pd.Series:
        """When each canonical row happened (date + hour for hourly data): the one definition of event time."""
        moment = frame[self.timestamp.column]
        if self.timestamp.hour:
            moment = moment + pd.Series(_hours(frame[self.timestamp.hour].astype("float64")), index=frame.index)
        return moment


def _hours(hours: pd.Series) -> np.ndarray:
    """Hours as durations (NaT for null): whole hours by numpy's casts (a million: 0.01 s, against 0.25 s for
    pandas' `to_timedelta` of floats, which the batch pays several times a row), any other as pandas does."""
    values = hours.to_numpy(dtype="float64")
    missing = np.isnan(values)
    known = values[~missing]
    if not (np.abs(known) < 2**31).all() or not np.array_equal(known, np.trunc(known)):
        return pd.to_timedelta(values, unit="h").to_numpy()
    durations = np.where(missing, 0, values).astype(np.int64).astype("timedelta64[h]").astype("timedelta64[ns]")
    durations[missing] = np.timedelta64("NaT")
    return durations


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and check a spec file; a mistake is a SpecError naming the file, the key path and what is allowed."""
    content = read_mapping(path, "a spec is a mapping of keys (name, source, key, columns, ...)", SpecError)
    try:
        return DatasetSpec.model_validate(content)
    except ValidationError as wrong:
        raise explain(wrong, path, DatasetSpec, SpecError) from None
