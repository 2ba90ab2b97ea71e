"""The dataset spec: everything Tiffin needs to know about one table, as configuration.

A user brings a new dataset by writing one of these (see `specs/bike_sharing.yaml`) and pointing
`params.yaml: spec` at it. The contract, the features, the model and the evaluation slices are all
derived from it, so training, the API and the batch runner cannot disagree.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

ColumnType = Literal["int", "float", "category", "date", "datetime", "string"]
DatePart = Literal["year", "month", "day", "dayofweek", "dayofyear", "hour"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FillSpec(_Strict):
    """A column as a named function of another (`using` from `from`), e.g. the weekday of the date: to fill a
    missing value (`fill_missing`), or to check that a given one agrees (`agrees_with`)."""

    using: str
    from_: str = Field(alias="from")


class ColumnSpec(_Strict):
    type: ColumnType
    nullable: bool = False
    min: int | float | None = None
    max: int | float | None = None
    values: list[str] | None = None
    parse: str | None = None
    fill_missing: FillSpec | None = None
    agrees_with: FillSpec | None = None  # a present value must equal `using(from)`, else the row is refused
    description: str = ""
    example: Any = None

    @model_validator(mode="after")
    def _categories_are_closed(self) -> ColumnSpec:
        if self.type == "category" and not self.values:
            raise ValueError("a category column needs its closed set of `values`")
        if self.type != "category" and self.values:
            raise ValueError("`values` only applies to category columns")
        return self


class SourceSpec(_Strict):
    table: str
    window_column: str
    seed_file: str | None = None


class TimestampSpec(_Strict):
    """When a row happened: one datetime column, or a date column plus an hour column; and where.

    `timezone` (IANA, e.g. Europe/Paris) is the zone of the data's clock: naive times are local time there,
    times with an offset are converted to it, and date parts are taken from local time. Without it, naive
    times are taken as they are and times with an offset are converted to UTC.
    """

    column: str
    hour: str | None = None
    timezone: str | None = None

    @model_validator(mode="after")
    def _zone_is_known(self) -> TimestampSpec:
        if self.timezone is not None:
            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"timezone {self.timezone!r} is no IANA zone (e.g. Europe/Paris, UTC)") from None
        return self


class FeatureSpec(_Strict):
    numeric: list[str] = []
    categorical: list[str] = []
    date_parts: dict[str, list[DatePart]] = {}

    def columns(self) -> list[str]:
        return [*self.numeric, *self.categorical, *self.date_parts]


class ModelSpec(_Strict):
    estimator: str = "sklearn.ensemble.HistGradientBoostingRegressor"
    params: dict[str, Any] = {}


class SliceSpec(_Strict):
    """An evaluation slice: one segment per category, or per bin of a numeric column."""

    column: str
    name: str | None = None
    bins: list[float] | None = None
    labels: list[str] | None = None

    @property
    def title(self) -> str:
        return self.name or self.column


class EvaluationSpec(_Strict):
    baseline_group_by: list[str]
    slices: list[SliceSpec] = []


class DatasetSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]*$")
    description: str = ""
    source: SourceSpec
    key: list[str]
    timestamp: TimestampSpec
    target: str
    # Columns that tell one series from another (a sensor, a store): one model for all, judged per series too.
    series: list[str] = []
    never_features: list[str] = []
    columns: dict[str, ColumnSpec]
    features: FeatureSpec
    model: ModelSpec = ModelSpec()
    evaluation: EvaluationSpec
    # A request field the contract does not name: refused (a 400 naming it), or ignored.
    unknown_fields: Literal["refuse", "ignore"] = "refuse"

    @model_validator(mode="after")
    def _references_are_declared(self) -> DatasetSpec:
        referenced = {
            "key": self.key,
            "timestamp": [self.timestamp.column, *filter(None, [self.timestamp.hour])],
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
        for name, col in self.columns.items():
            for rule, derived in (("fill_missing", col.fill_missing), ("agrees_with", col.agrees_with)):
                if derived and derived.from_ not in self.columns:
                    raise ValueError(f"{name}.{rule}.from names an undeclared column")
        return self

    @property
    def input_columns(self) -> list[str]:
        """What a caller sends to predict: every declared column but the target and leakage columns."""
        hidden = {self.target, *self.never_features}
        return [name for name in self.columns if name not in hidden]

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
            moment = moment + pd.to_timedelta(frame[self.timestamp.hour].astype("float64"), unit="h")
        return moment


def load_spec(path: str | Path) -> DatasetSpec:
    """Read and check a spec file; errors name the offending field."""
    with open(path, encoding="utf-8") as handle:
        return DatasetSpec.model_validate(yaml.safe_load(handle))
