"""The data contract: declared once in the spec, enforced at training, at the API and in batch.

Raw rows are first normalised to canonical types (`'6am'` -> 6, a missing weekday from the date),
then validated with a pandera schema built from the same spec. Nothing is dropped silently: every
rejected row comes back with its row number, key, field, raw value and the rule it broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from tiffin import normalise
from tiffin.spec import ColumnSpec, DatasetSpec

REJECT_COLUMNS = ["row", "field", "value", "rule"]
_CANONICAL_DTYPES = {
    "int": "Int64",
    "float": "float64",
    "category": object,
    "string": object,
    "date": "datetime64[ns]",
    "datetime": "datetime64[ns]",
}


@dataclass(frozen=True)
class ValidationResult:
    """Valid rows in canonical form, and one line per problem of every rejected row."""

    valid: pd.DataFrame
    rejects: pd.DataFrame

    @property
    def rejected_rows(self) -> int:
        return int(self.rejects["row"].nunique())


def _problems(index: pd.Index, field: str, raw: pd.Series, rule: str) -> pd.DataFrame:
    return pd.DataFrame({"row": index, "field": field, "value": raw.loc[index].astype(str), "rule": rule})


def _column_rule(spec: ColumnSpec) -> str:
    """How a value that cannot be read as the column's type is described to the caller."""
    return {
        "int": f"type: integer{' (' + spec.parse + ')' if spec.parse else ''}",
        "float": "type: number",
        "date": "type: date (YYYY-MM-DD)",
        "datetime": "type: datetime (ISO 8601)",
    }.get(spec.type, f"type: {spec.type}")


class Contract:
    """Normalise and validate rows of one dataset spec."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    @cached_property
    def training_schema(self) -> pa.DataFrameSchema:
        """All declared columns, target included; keys unique (the first occurrence is kept)."""
        return self._schema(list(self.spec.columns), unique_key=True)

    @cached_property
    def serving_schema(self) -> pa.DataFrameSchema:
        """What a prediction request must satisfy: the inputs, without target or leakage columns."""
        return self._schema(self.spec.input_columns, unique_key=False)

    def _schema(self, names: list[str], unique_key: bool) -> pa.DataFrameSchema:
        columns = {name: self._pandera_column(self.spec.columns[name]) for name in names}
        return pa.DataFrameSchema(
            columns,
            unique=self.spec.key if unique_key else None,
            report_duplicates="exclude_first",
            name=self.spec.name,
        )

    @staticmethod
    def _pandera_column(spec: ColumnSpec) -> pa.Column:
        checks = []
        if spec.min is not None and spec.max is not None:
            checks.append(pa.Check.in_range(spec.min, spec.max))
        elif spec.min is not None:
            checks.append(pa.Check.ge(spec.min))
        elif spec.max is not None:
            checks.append(pa.Check.le(spec.max))
        if spec.values:
            checks.append(pa.Check.isin(spec.values))
        return pa.Column(_CANONICAL_DTYPES[spec.type], checks=checks, nullable=spec.nullable)

    # -- normalisation -------------------------------------------------------------------------

    def normalise(self, raw: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Canonical types for `names`, and the values that could not be read (as problems)."""
        frame = pd.DataFrame(index=raw.index)
        problems = []
        for name in names:
            spec = self.spec.columns[name]
            if name not in raw.columns:
                frame[name] = pd.Series(index=raw.index, dtype=_CANONICAL_DTYPES[spec.type])
                if not spec.nullable and not spec.fill_missing:
                    missing = pd.Series("<missing>", index=raw.index)
                    problems.append(_problems(raw.index, name, missing, "required: field is missing"))
                continue
            column, unreadable = self._normalise_column(raw[name], spec)
            frame[name] = column
            if unreadable.any():
                problems.append(_problems(raw.index[unreadable], name, raw[name], _column_rule(spec)))
        self._fill_missing(frame, names)
        return frame, pd.concat(problems) if problems else pd.DataFrame(columns=REJECT_COLUMNS)

    def _normalise_column(self, raw: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
        present = raw.notna().to_numpy()
        if spec.type in ("int", "float"):
            parser = normalise.resolve(spec.parse) if spec.parse else _to_number
            values = parser(raw).astype("float64")
            unreadable = present & values.isna().to_numpy()
            if spec.type == "int":
                # 6.0 is the hour 6; 6.5 is no hour at all.
                unreadable |= (values.notna() & (values != np.floor(values))).to_numpy()
                values = values.where(~unreadable).astype("Int64")
            return values, unreadable
        if spec.type in ("date", "datetime"):
            values = pd.to_datetime(raw, errors="coerce", format="ISO8601", utc=True).dt.tz_localize(None)
            unreadable = present & values.isna().to_numpy()
            if spec.type == "date":
                unreadable |= (values.notna() & (values != values.dt.normalize())).to_numpy()
            return values.where(~unreadable).astype("datetime64[ns]"), unreadable
        if spec.type == "category":
            # Match the closed set case-insensitively ('clear' is 'Clear'); pandera rejects the rest.
            canonical = {value.lower(): value for value in spec.values or []}
            text = raw.where(raw.isna(), raw.astype(str).str.strip())
            values = text.map(lambda v: canonical.get(v.lower(), v) if isinstance(v, str) else None)
            return values.astype(object), np.zeros(len(raw), dtype=bool)
        values = raw.where(raw.isna(), raw.astype(str)).astype(object)
        return values, np.zeros(len(raw), dtype=bool)

    def _fill_missing(self, frame: pd.DataFrame, names: list[str]) -> None:
        for name in names:
            fill = self.spec.columns[name].fill_missing
            if fill is None or fill.from_ not in frame:
                continue
            gaps = frame[name].isna() & frame[fill.from_].notna()
            if gaps.any():
                frame.loc[gaps, name] = normalise.resolve(fill.using)(frame.loc[gaps, fill.from_])

    # -- validation ----------------------------------------------------------------------------

    def validate(self, raw: pd.DataFrame, *, serving: bool = False) -> ValidationResult:
        """Split raw rows into valid canonical rows and rejects (row, field, value, rule).

        `serving=True` checks only the model inputs (a prediction request has no target).
        """
        schema = self.serving_schema if serving else self.training_schema
        raw = raw.reset_index(drop=True)
        frame, problems = self.normalise(raw, list(schema.columns))
        failures = [problems]
        try:
            schema.validate(frame, lazy=True)
        except SchemaErrors as errors:
            failures.append(self._schema_failures(errors.failure_cases, raw))
        rejects = (
            pd.concat(failures, ignore_index=True)
            .drop_duplicates(["row", "field"], keep="first")  # an unreadable value is not also "null"
            .sort_values(["row", "field"], kind="stable")
            .reset_index(drop=True)
        )
        rejects["row"] = rejects["row"].astype("int64")
        valid = frame.drop(index=rejects["row"].unique())
        return ValidationResult(valid=self._finalise(valid), rejects=self._with_keys(rejects, raw))

    def _schema_failures(self, cases: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        cases = cases[cases["index"].notna()]
        rows = cases["index"].astype("int64").to_numpy()
        rules = cases["check"].astype(str).to_numpy()
        fields, values = [], []
        for row, name, rule in zip(rows, cases["column"], rules, strict=True):
            if rule == "multiple_fields_uniqueness":  # one line for the key, not one per key column
                name = "+".join(self.spec.key)
                fields.append(name)
                values.append("+".join(str(raw.at[row, k]) for k in self.spec.key))
            else:
                fields.append(name)
                values.append(str(raw.at[row, name]) if name in raw.columns else "<missing>")
        rules = ["unique key (first kept)" if r == "multiple_fields_uniqueness" else r for r in rules]
        return pd.DataFrame({"row": rows, "field": fields, "value": values, "rule": rules})

    def _with_keys(self, rejects: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        """Put the raw key of each rejected row beside its number, so it can be found at the source."""
        keys = [k for k in self.spec.key if k in raw.columns]
        located = raw.loc[rejects["row"], keys].astype(str).reset_index(drop=True)
        return pd.concat([rejects[["row"]], located, rejects[["field", "value", "rule"]]], axis=1)

    def _finalise(self, valid: pd.DataFrame) -> pd.DataFrame:
        """Non-nullable integers become plain int64 once no NA can remain."""
        for name in valid.columns:
            spec = self.spec.columns[name]
            if spec.type == "int" and not spec.nullable:
                valid[name] = valid[name].astype("int64")
        return valid

    def event_time(self, frame: pd.DataFrame) -> pd.Series:
        """When each canonical row happened (date + hour for hourly data)."""
        moment = frame[self.spec.timestamp.column]
        if self.spec.timestamp.hour:
            moment = moment + pd.to_timedelta(frame[self.spec.timestamp.hour].astype("float64"), unit="h")
        return moment


def _to_number(raw: pd.Series) -> pd.Series:
    # Booleans are not numbers here, even though Python says True == 1.
    values = pd.to_numeric(raw.map(lambda v: None if isinstance(v, bool) else v), errors="coerce")
    return values.astype("float64")
