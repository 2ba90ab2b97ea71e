"""The data contract: declared once in the spec, enforced at training, at the API and in batch.

Raw rows are first normalised to canonical types (`'6am'` -> 6, a missing weekday from the date),
then validated with a pandera schema built from the same spec. Nothing is dropped silently: every
rejected row comes back with its row number, key, field, raw value and the rule it broke.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property, partial
from operator import itemgetter

import numpy as np
import pandas as pd
import pandera.pandas as pa
from pandera.errors import SchemaErrors

from tiffin.core import normalise
from tiffin.core.spec import ColumnSpec, DatasetSpec, FillSpec

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
    """Valid rows in canonical form, and one line per problem of every rejected row; on the training path, valid
    rows whose target has not arrived (yet) apart, as `unlabeled`: neither valid for training nor rejected."""

    valid: pd.DataFrame
    rejects: pd.DataFrame
    unlabeled: pd.DataFrame = field(default_factory=pd.DataFrame)

    @property
    def rejected_rows(self) -> int:
        return int(self.rejects["row"].nunique())


def _problems(index: pd.Index, field: str, raw: pd.Series, rule: str) -> pd.DataFrame:
    return pd.DataFrame({"row": index, "field": field, "value": raw.loc[index].map(shown), "rule": rule})


def shown(value: object) -> str:
    """A raw value as text in a problem report; bytes (a BLOB) as SQL hex, x'00FF', never decoded."""
    if isinstance(value, bytes | bytearray | memoryview):
        return f"x'{bytes(value).hex().upper()}'"
    return str(value)


def _column_rule(spec: ColumnSpec, zone: str | None = None) -> str:
    """How a value that cannot be read as the column's type is described to the caller."""
    return {
        "int": f"type: integer{' (' + spec.parse + ')' if spec.parse else ''}",
        "float": "type: number",
        "date": "type: date (YYYY-MM-DD)",
        "datetime": "type: datetime (YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM])"
        + (f", a time that exists in {zone} (not in a daylight-saving gap)" if zone else ""),
    }.get(spec.type, f"type: {spec.type}")


class Contract:
    """Normalise and validate rows of one dataset spec."""

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec

    @cached_property
    def training_schema(self) -> pa.DataFrameSchema:
        """All declared columns, target included; keys unique (the first occurrence is kept). A missing target is
        no failure: the row is unlabeled (`validate` puts it apart)."""
        return self._schema(list(self.spec.columns), unique_key=True)

    @cached_property
    def serving_schema(self) -> pa.DataFrameSchema:
        """What a prediction request must satisfy: the inputs, without target or leakage columns."""
        return self._schema(self.spec.input_columns, unique_key=False)

    @cached_property
    def history_schema(self) -> pa.DataFrameSchema:
        """The history features (floats, null where nothing is known), within what their column allows: a lag,
        mean, min or max within the column's range; a sum of a non-negative column non-negative; a std never
        negative."""
        columns = {}
        for feature in self.spec.history.features if self.spec.history else []:
            source = self.spec.columns[feature.column]
            within = _range_check(source.min, source.max)
            for lag in feature.lags:
                columns[feature.lag_name(lag)] = pa.Column(float, checks=within, nullable=True)
            for rolling in feature.rolling:
                for agg in rolling.agg:
                    non_negative = source.min is not None and source.min >= 0
                    checks = {"std": _range_check(0, None), "sum": _range_check(0 if non_negative else None, None)}
                    checks = checks.get(agg, within)
                    columns[feature.window_name(agg, rolling.window)] = pa.Column(float, checks=checks, nullable=True)
        return pa.DataFrameSchema(columns, name=f"{self.spec.name} history")

    def _schema(self, names: list[str], unique_key: bool) -> pa.DataFrameSchema:
        columns = {name: self._pandera_column(self.spec.columns[name], name == self.spec.target) for name in names}
        return pa.DataFrameSchema(
            columns,
            unique=self.spec.key if unique_key else None,
            report_duplicates="exclude_first",
            name=self.spec.name,
        )

    @staticmethod
    def _pandera_column(spec: ColumnSpec, may_be_missing: bool = False) -> pa.Column:
        checks = _range_check(spec.min, spec.max)
        if spec.values:
            checks.append(pa.Check.isin(spec.values))
        return pa.Column(_CANONICAL_DTYPES[spec.type], checks=checks, nullable=spec.nullable or may_be_missing)

    def surely_valid(self, frame: pd.DataFrame, schema: pa.DataFrameSchema) -> bool:
        """True when `schema` (one of this contract's) would find nothing wrong with the normalised `frame`: the same
        rules, read from the same pandera columns, one vectorised pass a column. False means "not sure": pandera
        then runs and names every failure. Most chunks are clean, and pandera's own pass costs ~0.8 µs a row (its
        checks' machinery, nulls looked for again in every check): a third of the contract."""
        if schema.checks or schema.strict or schema.coerce:
            return False
        for name, column in schema.columns.items():
            if name not in frame or not _column_surely_valid(frame[name], column):
                return False
        return not (schema.unique and frame.duplicated(subset=schema.unique).any())

    # -- normalisation -------------------------------------------------------------------------

    def normalise(self, raw: pd.DataFrame, names: list[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Canonical types for `names`, and the values that could not be read (as problems)."""
        columns, problems = {}, []
        for name in names:
            spec = self.spec.columns[name]
            if name not in raw.columns:
                columns[name] = pd.Series(index=raw.index, dtype=_CANONICAL_DTYPES[spec.type])
                if not spec.nullable and not spec.fill_missing:
                    missing = pd.Series("<missing>", index=raw.index)
                    problems.append(_problems(raw.index, name, missing, "required: field is missing"))
                continue
            columns[name], unreadable = self._normalise_column(raw[name], spec)
            if unreadable.any():
                rule = _column_rule(spec, self.spec.timestamp.timezone)
                problems.append(_problems(raw.index[unreadable], name, raw[name], rule))
        # One frame from all the columns: inserting them one at a time cost a third of the normalising (2026-12-08).
        frame = pd.DataFrame(columns, index=raw.index)
        self._fill_missing(frame, names)
        return frame, pd.concat(problems) if problems else pd.DataFrame(columns=REJECT_COLUMNS)

    def _normalise_column(self, raw: pd.Series, spec: ColumnSpec) -> tuple[pd.Series, np.ndarray]:
        if spec.type in ("int", "float"):
            present = raw.notna().to_numpy()
            parser = normalise.resolve(spec.parse, normalise.PARSERS) if spec.parse else _to_number
            values = normalise.on_distinct(raw, parser).astype("float64")
            numbers = values.to_numpy()
            # NaN from a present value, and infinities, are no numbers; NaN, Infinity or 1e400 as text among them.
            unreadable = present & ~np.isfinite(numbers)
            if spec.type == "int":
                # 6.0 is the hour 6; 6.5 is no hour at all; 1e19 is beyond a 64-bit integer.
                with np.errstate(invalid="ignore"):
                    unreadable |= np.isfinite(numbers) & ((numbers != np.floor(numbers)) | (np.abs(numbers) >= 2.0**63))
                return _integers(numbers, ~unreadable & np.isfinite(numbers), raw.index), unreadable
            return values.where(~unreadable), unreadable
        if spec.type in ("date", "datetime"):
            values = normalise.on_distinct(raw, partial(self._moments, spec))
            unreadable = raw.notna().to_numpy() & values.isna().to_numpy()
            if spec.type == "date":
                unreadable |= (values.notna() & (values != values.dt.normalize())).to_numpy()
            return values.where(~unreadable).astype("datetime64[ns]"), unreadable
        if spec.type == "category":
            # Match the closed set case-insensitively ('clear' is 'Clear'); pandera rejects the rest.
            canonical = {value.lower(): value for value in spec.values or []}

            def category(value: object) -> str:
                text = str(value).strip()
                return canonical.get(text.lower(), text)

            return normalise.map_unique(raw, category), np.zeros(len(raw), dtype=bool)
        values = raw.where(raw.isna(), raw.map(shown)).astype(object)
        return values, np.zeros(len(raw), dtype=bool)

    def _moments(self, spec: ColumnSpec, raw: pd.Series) -> pd.Series:
        """A date or datetime column's values as naive moments; NaT where a value is not in its documented form."""
        documented = normalise.iso_text(raw, normalise.ISO_DAY if spec.type == "date" else normalise.ISO_MOMENT)
        if spec.type == "datetime" and (zone := self.spec.timestamp.timezone):
            return normalise.local_moments(raw.where(documented), zone)[0]
        values = pd.to_datetime(raw.where(documented), errors="coerce", format="ISO8601", utc=True)
        return values.dt.tz_localize(None)

    def _fill_missing(self, frame: pd.DataFrame, names: list[str]) -> None:
        for name in names:
            fill = self.spec.columns[name].fill_missing
            if fill is None or fill.from_ not in frame:
                continue
            gaps = frame[name].isna() & frame[fill.from_].notna()
            if gaps.any():
                frame.loc[gaps, name] = normalise.resolve(fill.using, normalise.FILLS)(frame.loc[gaps, fill.from_])

    # -- validation ----------------------------------------------------------------------------

    def validate(self, raw: pd.DataFrame, *, serving: bool = False) -> ValidationResult:
        """Split raw rows into valid canonical rows and rejects (row, field, value, rule).

        `serving=True` checks only the model inputs (a prediction request has no target). Otherwise valid rows
        without a target are returned apart, as `unlabeled`.
        """
        schema = self.serving_schema if serving else self.training_schema
        raw = raw.reset_index(drop=True)
        names = list(schema.columns)
        frame, problems = self.normalise(raw, names)
        failures = [problems]
        try:
            if not self.surely_valid(frame, schema):
                schema.validate(frame, lazy=True)
        except SchemaErrors as errors:
            failures.append(self._schema_failures(errors.failure_cases, raw))
        # Last, so that a value outside its own type, range or set is reported as such, not as a disagreement.
        for name, rows in disagreements(self.spec, frame, names, raw).items():
            failures.append(_problems(raw.index[rows], name, raw[name], agreement_rule(self.spec.columns[name])))
        rejects = (
            pd.concat(failures, ignore_index=True)
            .drop_duplicates(["row", "field"], keep="first")  # an unreadable value is not also "null"
            .sort_values(["row", "field"], kind="stable")
            .reset_index(drop=True)
        )
        rejects["row"] = rejects["row"].astype("int64")
        valid = frame.drop(index=rejects["row"].unique())
        unlabeled = valid.iloc[:0]
        if not serving and (waiting := valid[self.spec.target].isna().to_numpy()).any():
            valid, unlabeled = valid[~waiting].copy(), valid[waiting]
        return ValidationResult(
            valid=self._finalise(valid),
            rejects=self._with_keys(rejects, raw),
            unlabeled=self._finalise(unlabeled.copy(), keep=self.spec.target),
        )

    def _schema_failures(self, cases: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        cases = cases[cases["index"].notna()]
        rows = cases["index"].astype("int64").to_numpy()
        rules = cases["check"].astype(str).to_numpy()
        fields = cases["column"].to_numpy(dtype=object).copy()
        values = np.full(len(rows), "<missing>", dtype=object)
        duplicates = rules == "multiple_fields_uniqueness"
        if duplicates.any():  # one line for the key, not one per key column
            fields[duplicates] = "+".join(self.spec.key)
            keys = raw[self.spec.key].to_numpy(dtype=object)[rows[duplicates]]
            values[duplicates] = ["+".join(map(str, key)) for key in keys]
            rules = np.where(duplicates, "unique key (first kept)", rules)
        for name in pd.unique(fields[~duplicates]):  # a column at a time: thousands of failures cost milliseconds
            if name in raw.columns:
                at = ~duplicates & (fields == name)
                values[at] = [shown(value) for value in raw[name].to_numpy(dtype=object)[rows[at]]]
        return pd.DataFrame({"row": rows, "field": fields, "value": values, "rule": rules})

    def _with_keys(self, rejects: pd.DataFrame, raw: pd.DataFrame) -> pd.DataFrame:
        """Put the raw key of each rejected row beside its number, so it can be found at the source."""
        keys = [k for k in self.spec.key if k in raw.columns]
        located = raw.loc[rejects["row"], keys].map(shown).reset_index(drop=True)
        return pd.concat([rejects[["row"]], located, rejects[["field", "value", "rule"]]], axis=1)

    def _finalise(self, valid: pd.DataFrame, keep: str | None = None) -> pd.DataFrame:
        """Non-nullable integers (but `keep`) become plain int64 once no NA can remain."""
        for name in valid.columns:
            spec = self.spec.columns[name]
            if spec.type == "int" and not spec.nullable and name != keep:
                valid[name] = valid[name].astype("int64")
        return valid

    def held_back(self, raw: pd.DataFrame, until: datetime, canonical: pd.DataFrame | None = None) -> np.ndarray:
        """Which raw rows happened after `until`, or have no readable time (to replay later hours). `canonical`:
        the rows' time columns already normalised, if the caller has them."""
        if canonical is None:
            canonical, _ = self.normalise(raw, self.spec.timestamp.columns)
        keep = (self.spec.event_time(canonical) <= pd.Timestamp(until)).fillna(False).to_numpy(dtype=bool)
        return ~keep


def _range_check(low: float | None, high: float | None) -> list[pa.Check]:
    if low is not None and high is not None:
        return [pa.Check.in_range(low, high)]
    if low is not None:
        return [pa.Check.ge(low)]
    return [pa.Check.le(high)] if high is not None else []


def _column_surely_valid(values: pd.Series, column: pa.Column) -> bool:
    """The pandera column's dtype, nullability and checks, met by every value (nulls aside, as pandera's checks
    ignore them); False for a check this does not know (pandera judges it)."""
    if column.unique or column.coerce or values.dtype != pd.api.types.pandas_dtype(column.dtype.type):
        return False
    checks = list(column.checks)
    if not all(check.ignore_na for check in checks):  # a check that judges nulls too: pandera's to judge
        return False
    sets = [check.statistics["allowed_values"] for check in checks if check.name == "isin"]
    inside = [values.isin(allowed) for allowed in sets]
    # Every value in a set that holds no null: none is null (a text column's nulls cost more to find than this).
    if any(mask.all() and not any(pd.isna(v) for v in allowed) for mask, allowed in zip(inside, sets, strict=True)):
        nulls = None
    else:
        nulls = values.isna()
        if (not column.nullable and nulls.any()) or not all((mask | nulls).all() for mask in inside):
            return False
    for check in checks:
        if check.name != "isin" and ((known := _CHECKS.get(check.name)) is None or not known(values, check.statistics)):
            return False
    return True


def _within(values: pd.Series, low: object, high: object, inclusive: bool = True) -> bool:
    if not inclusive or not pd.api.types.is_numeric_dtype(values) or pd.api.types.is_bool_dtype(values):
        return False
    least, most = values.min(), values.max()  # nulls skipped, as pandera's checks skip them
    if pd.isna(least):  # nulls only
        return True
    return bool((low is None or least >= low) and (high is None or most <= high))


_CHECKS = {  # pandera's built-in range checks the contract uses, by name: (values, statistics) -> all pass
    "in_range": lambda v, s: _within(v, s["min_value"], s["max_value"], s["include_min"] and s["include_max"]),
    "greater_than_or_equal_to": lambda v, s: _within(v, s["min_value"], None),
    "less_than_or_equal_to": lambda v, s: _within(v, None, s["max_value"]),
}


def agreement_rule(spec: ColumnSpec) -> str:
    assert spec.agrees_with is not None
    return f"agrees_with: {spec.agrees_with.using}({spec.agrees_with.from_})"


def disagreements(
    spec: DatasetSpec, frame: pd.DataFrame, names: list[str], raw: pd.DataFrame | None = None
) -> dict[str, np.ndarray]:
    """Positions where a given value differs from what its declared source says (`agrees_with`): a weekday
    that is not its date's. `frame` holds canonical columns; a value `raw` lacks (filled from its source, so
    agreeing by definition) is not judged."""
    found = {}
    for name in names:
        rule = spec.columns[name].agrees_with
        if rule is None or rule.from_ not in frame:
            continue
        given, source = frame[name], frame[rule.from_]
        both = (given.notna() & source.notna()).to_numpy()
        if raw is not None and name in raw.columns:
            both &= raw[name].notna().to_numpy()
        if not both.any():
            continue
        given, derived = given[both], normalise.resolve(rule.using, normalise.FILLS)(source[both])
        if pd.api.types.is_numeric_dtype(given):
            differs = given.astype("float64").to_numpy() != derived.astype("float64").to_numpy()
        else:
            differs = given.astype(str).to_numpy() != derived.astype(str).to_numpy()
        if differs.any():
            found[name] = np.flatnonzero(both)[differs]
    return found


def _integers(numbers: np.ndarray, whole: np.ndarray, index: pd.Index) -> pd.Series:
    """Whole float64 numbers as a nullable Int64 column (null where not `whole`), built from its values and mask:
    `astype("Int64")` checks every float again, 2 ms a 25,000-row column."""
    return pd.Series(pd.arrays.IntegerArray(np.where(whole, numbers, 0).astype("int64"), ~whole), index=index)


def _to_number(raw: pd.Series) -> pd.Series:
    return normalise.to_numbers(normalise.without_booleans(raw))


# -- the same contract, one record at a time ----------------------------------------------------
#
# A prediction request of one row cannot afford pandas (milliseconds per call), so requests are
# checked record by record in plain Python. The rules are the spec's, with pandera's own names,
# and tests/code/test_contract_serving.py proves both paths accept, reject and canonicalise alike.

_MISSING = object()
COLUMNAR_ROWS = 16  # up to here a row-by-row step is cheaper than numpy's cost per call (measured)
_NONE = type(None)
_NUMBER_TYPES = frozenset({int, float, _NONE})  # bool is neither: type(True) is bool
_TEXT_TYPES = frozenset({str, _NONE})
UNKNOWN_FIELD_RULE = "unknown field: not an input of the contract (the spec's `unknown_fields: ignore` allows it)"
_YEARS_SERVED = r"^(1[7-9]|2[01])[0-9]{2}-"  # 1700 .. 2199
_FIRST_DAY, _LAST_DAY = np.datetime64("1678-01-01"), np.datetime64("2262-01-01")


def json_schema(spec: ColumnSpec) -> dict:
    """The JSON Schema of one canonical field, for the API's OpenAPI document."""
    schema: dict = {
        "int": {"type": "integer"},
        "float": {"type": "number"},
        "category": {"type": "string", "enum": list(spec.values or [])},
        "string": {"type": "string"},
        # Canonical moments are nanosecond timestamps, which end in 2262: say which years are served.
        "date": {"type": "string", "format": "date", "pattern": _YEARS_SERVED},
        "datetime": {"type": "string", "format": "date-time", "pattern": _YEARS_SERVED},
    }[spec.type]
    if spec.min is not None:
        schema["minimum"] = spec.min
    if spec.max is not None:
        schema["maximum"] = spec.max
    if spec.description:
        schema["description"] = spec.description
    if spec.agrees_with:  # a rule across fields, which JSON Schema cannot state: said in words and as an extension
        rule = spec.agrees_with
        said = f"Must equal {rule.using}({rule.from_}) (a 400 otherwise)"
        schema["description"] = f"{schema['description']}. {said}" if "description" in schema else said
        schema["x-agrees-with"] = {"using": rule.using, "from": rule.from_}
    if spec.example is not None:
        schema["examples"] = [spec.example]
    if spec.nullable or spec.fill_missing:
        schema = {
            "anyOf": [schema, {"type": "null"}],
            **{k: schema.pop(k) for k in ("description", "examples", "x-agrees-with") if k in schema},
        }
    return schema


class RecordValidator:
    """The serving contract for plain records (dicts, as parsed from JSON), column by column.

    Each column is checked with vectorised numpy when all its values have the expected JSON type;
    a column with anything else in it is read by the DataFrame contract's own normaliser. Canonical
    columns come back as numpy arrays (numbers: float64 with NaN; dates: datetime64[ns] with NaT) or
    lists (categories, strings).
    """

    def __init__(self, spec: DatasetSpec) -> None:
        self.spec = spec
        self.contract = Contract(spec)
        self.columns = spec.input_columns
        zone = spec.timestamp.timezone
        self._rule_texts = {name: self._rules(spec.columns[name], zone) for name in self.columns}
        self._allowed = {name: frozenset([*(spec.columns[name].values or ()), None]) for name in self.columns}
        self._known = frozenset(self.columns)
        self._getters = {name: itemgetter(name) for name in self.columns}
        rules = {name: spec.columns[name].agrees_with for name in self.columns}
        self._agreements = [(name, rule) for name, rule in rules.items() if rule and rule.from_ in self.columns]
        self._derived: dict[tuple[str, object], object] = {}  # (column, source value) -> what the source says

    @staticmethod
    def _rules(spec: ColumnSpec, zone: str | None) -> dict[str, str]:
        """Rule texts, taken from the pandera checks themselves so both paths name rules alike."""
        checks = Contract._pandera_column(spec).checks
        return {"type": _column_rule(spec, zone), **{check.name: check.error for check in checks}}

    def validate(self, records: list[dict]) -> tuple[dict[str, object], list[dict]]:
        """Canonical columns, and problems as row/field/value/rule (sorted by row)."""
        columns, problems = {}, []
        if self.spec.unknown_fields == "refuse":
            self._refuse_unknown(records, problems)
        for name in self.columns:
            columns[name] = self._column(name, _field(records, name, self._getters[name]), problems)
        for name, rows in self._disagreements(columns).items():
            for row in rows:
                self._problem(problems, int(row), name, records[row][name], agreement_rule(self.spec.columns[name]))
        self._fill_missing(columns)
        self._reject_nulls(columns, problems)
        problems.sort(key=lambda problem: problem["row"])
        return columns, problems

    def _refuse_unknown(self, records: list[dict], problems: list[dict]) -> None:
        """A field the contract does not name is a client's mistake (a typo, the target, another API's field)."""
        known = self._known
        if set().union(*records) <= known:  # the usual request: every key known, checked at C speed
            return
        for row, record in enumerate(records):
            if not record.keys() <= known:
                for name in record.keys() - known:
                    self._problem(problems, row, name, record[name], UNKNOWN_FIELD_RULE)

    def _disagreements(self, columns: dict[str, object]) -> dict[str, list[int]]:
        """`disagreements` for one request without pandas: each distinct source value (a day) is derived once and
        remembered, since requests repeat them; a new one costs one call of the spec's function."""
        found = {}
        for name, rule in self._agreements:
            given, source = columns[name], columns[rule.from_]
            if _columnar(given, source):
                differs = self._disagreeing_columns(name, rule, given, source)
            else:
                differs = self._disagreeing_rows(name, rule, given, source)
            if differs:
                found[name] = differs
        return found

    def _disagreeing_rows(self, name: str, rule: FillSpec, given: list, source: object) -> list[int]:
        """Row by row: any canonical columns."""
        rows = [row for row in range(len(source)) if not _null(given[row]) and not _null(source[row])]
        sources = list({source[row] for row in rows})
        derived = dict(zip(sources, self._derive(name, rule, sources), strict=True))
        return [row for row in rows if not _same(given[row], derived[source[row]])]

    def _disagreeing_columns(self, name: str, rule: FillSpec, given: list, source: np.ndarray) -> list[int]:
        """Without a Python step per row: texts (or nulls) against a column of moments or numbers, each distinct
        source value derived once."""
        texts = np.array(given, dtype=object)
        present = ~(np.isnat(source) if source.dtype.kind == "M" else np.isnan(source))
        rows = np.flatnonzero(present & np.not_equal(texts, None).astype(bool))
        if not len(rows):
            return []
        distinct, inverse = np.unique(source[rows], return_inverse=True)
        derived = self._derive(name, rule, list(distinct))
        if not all(type(value) is str for value in derived):  # _same's other cases: row by row
            return [int(row) for row, i in zip(rows, inverse, strict=True) if not _same(texts[row], derived[i])]
        differs = np.not_equal(texts[rows], np.array(derived, dtype=object)[inverse]).astype(bool)
        return rows[differs].tolist()

    def _derive(self, name: str, rule: FillSpec, sources: list) -> list:
        """What the rule's function says of each source value; remembered, since requests repeat them (a new
        value costs one call of the spec's function for all new ones)."""
        unknown = list({value for value in sources if (name, value) not in self._derived})
        if unknown:
            if len(self._derived) > 100_000:  # a client sending ever new values cannot grow it for good
                self._derived.clear()
            derived = normalise.resolve(rule.using, normalise.FILLS)(pd.Series(unknown)).tolist()
            self._derived.update(((name, value), result) for value, result in zip(unknown, derived, strict=True))
        return [self._derived[(name, value)] for value in sources]

    # -- one column ---------------------------------------------------------------------------

    def _column(self, name: str, values: list, problems: list[dict]) -> object:
        spec = self.spec.columns[name]
        canonical = self._well_typed(spec, values, self._allowed[name])
        if canonical is None:  # something is off: read it exactly as the DataFrame contract does
            canonical = self._normalised(name, spec, values, problems)
            if spec.type == "category":
                self._check_categories(name, spec, canonical, values, problems)
        if spec.type in ("int", "float"):
            self._check_range(name, spec, canonical, values, problems)
        return canonical

    @staticmethod
    def _well_typed(spec: ColumnSpec, values: list, allowed: frozenset) -> object | None:
        """The fast path: every value already has the JSON type the contract expects, or is null."""
        types = set(map(type, values))
        if spec.type in ("int", "float") and types <= _NUMBER_TYPES:
            try:
                numbers = np.array(values, dtype="float64")  # None becomes NaN
            except OverflowError:  # an integer beyond float64: the DataFrame contract names it
                return None
            # Infinite, or an int beyond int64: the DataFrame contract names it. (NaN compares False: missing.)
            # One ufunc and one reduction a column: for a one-record request numpy's per-call cost is the cost.
            if (np.abs(numbers) >= 2.0**63 if spec.type == "int" else np.isinf(numbers)).any():
                return None
            if spec.type == "float" or float not in types:
                return numbers
            if np.array_equal(numbers, np.floor(numbers), equal_nan=True):
                return numbers
        elif spec.type == "category" and types <= _TEXT_TYPES and set(values) <= allowed:  # allowed holds None
            return values
        elif spec.type == "date" and types <= _TEXT_TYPES and all(map(_is_day, distinct := set(values) - {None})):
            if max(map(len, distinct), default=10) > 10:  # the same day at midnight: the day
                values = [None if v is None else v[:10] for v in values]
            try:
                days = np.array(values, dtype="datetime64[D]")  # None becomes NaT
            except ValueError:
                return None
            # Nanosecond timestamps span 1677..2262; leave anything else to pandas, which rejects it.
            present = days[~np.isnat(days)]
            if not len(present) or (present.min() > _FIRST_DAY and present.max() < _LAST_DAY):
                return days.astype("datetime64[ns]")
        return None

    def _normalised(self, name: str, spec: ColumnSpec, values: list, problems: list) -> object:
        raw = pd.Series([None if v is _MISSING else v for v in values], dtype=object)
        canonical, unreadable = self.contract._normalise_column(raw, spec)
        for row, value in enumerate(values):
            if unreadable[row]:
                self._problem(problems, row, name, value, self._rule_texts[name]["type"])
            elif value is _MISSING and not spec.nullable and not spec.fill_missing:
                self._problem(problems, row, name, value, "required: field is missing")
        if spec.type in ("int", "float"):
            return canonical.to_numpy(dtype="float64", na_value=np.nan)
        if spec.type in ("date", "datetime"):
            return canonical.to_numpy(dtype="datetime64[ns]")
        return [None if pd.isna(v) else v for v in canonical]

    def _problem(self, problems: list, row: int, name: str, value: object, rule: str) -> None:
        shown = "<missing>" if value is _MISSING else str(value)
        problems.append({"row": row, "field": name, "value": shown, "rule": rule})

    def _check_range(self, name: str, spec: ColumnSpec, numbers: np.ndarray, values: list, problems: list) -> None:
        below = None if spec.min is None else numbers < spec.min  # NaN compares False: missing is in range
        above = None if spec.max is None else numbers > spec.max
        beyond = above if below is None else below if above is None else below | above
        if beyond is not None and beyond.any():
            outside = np.flatnonzero(beyond)
            rules = self._rule_texts[name]
            rule = rules.get("in_range") or rules.get("greater_than_or_equal_to") or rules["less_than_or_equal_to"]
            for row in outside:
                self._problem(problems, int(row), name, values[row], rule)
            numbers[outside] = np.nan

    def _check_categories(self, name: str, spec: ColumnSpec, categories: list, values: list, problems: list) -> None:
        allowed = set(spec.values or [])
        for row, category in enumerate(categories):
            if category is not None and category not in allowed:
                self._problem(problems, row, name, values[row], self._rule_texts[name]["isin"])
                categories[row] = None

    # -- across columns ------------------------------------------------------------------------

    def _fill_missing(self, columns: dict[str, object]) -> None:
        for name in self.columns:
            fill = self.spec.columns[name].fill_missing
            if fill is None or fill.from_ not in columns:
                continue
            column = columns[name]
            if not isinstance(column, list) or None not in column:  # only a list of texts holds a None
                continue
            gaps = [row for row, value in enumerate(column) if value is None]
            if gaps:
                source = pd.Series(np.asarray(columns[fill.from_])[gaps])
                derived = normalise.resolve(fill.using, normalise.FILLS)(source).tolist()
                for row, value in zip(gaps, derived, strict=True):
                    columns[name][row] = None if pd.isna(value) else value

    def _reject_nulls(self, columns: dict[str, object], problems: list[dict]) -> None:
        reported = {(p["row"], p["field"]) for p in problems}
        for name in self.columns:
            if self.spec.columns[name].nullable:
                continue
            nulls = _is_null(columns[name])
            if not nulls.any():
                continue
            for row in np.flatnonzero(nulls):
                if (int(row), name) not in reported:
                    self._problem(problems, int(row), name, None, "not_nullable")


def _field(records: list[dict], name: str, getter: itemgetter) -> list:
    """One field of every record (`getter`: its itemgetter), `_MISSING` where a record lacks it."""
    try:
        return list(map(getter, records))  # the usual request: every record has it
    except KeyError:
        return [record.get(name, _MISSING) for record in records]


def _columnar(given: object, source: object) -> bool:
    """Whether `_disagreeing_columns` applies: a list of texts or nulls, against moments or numbers."""
    numeric = isinstance(source, np.ndarray) and source.dtype.kind in "Mf" and len(source) > COLUMNAR_ROWS
    return numeric and isinstance(given, list) and set(map(type, given)) <= _TEXT_TYPES


def _is_day(text: str) -> bool:
    """'2012-06-01', or the same day at midnight ('2012-06-01T00:00:00'): the documented forms (`ISO_DAY`)."""
    return normalise.ISO_DAY.fullmatch(text) is not None


def _null(value: object) -> bool:
    return value is None or value != value  # NaN and NaT are not equal to themselves


def _same(given: object, derived: object) -> bool:
    if isinstance(given, str) or isinstance(derived, str):
        return str(given) == str(derived)
    return float(given) == float(derived)


def _is_null(column: object) -> np.ndarray:
    if isinstance(column, np.ndarray) and column.dtype.kind == "M":
        return np.isnat(column)
    if isinstance(column, np.ndarray) and column.dtype.kind == "f":
        return np.isnan(column)
    if None not in column:  # the usual case, answered without building an array
        return np.zeros(0, dtype=bool)
    return np.array([value is None for value in column], dtype=bool)
