"""Schemathesis hooks (SCHEMATHESIS_HOOKS): a rule across fields that JSON Schema cannot state.

A field documented with `x-agrees-with: {using, from}` (a weekday and its date) is refused when it disagrees;
schemathesis, which reads only the JSON Schema, would call that a schema-valid request rejected. Generated
records get the agreeing value where the field's own value is schema-valid and its source reads (a negative
case stays negative), so every other rule is still fuzzed.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import schemathesis
from jsonschema import Draft202012Validator

from tiffin.core.normalise import FILLS, ISO_DAY, ISO_MOMENT, resolve
from tiffin.serving.openapi import record_schema


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    rows = case.body.get("rows") if isinstance(case.body, dict) else None
    if not isinstance(rows, list):
        return case
    properties = (record_schema(case.operation.schema.raw_schema) or {}).get("properties", {})
    for name, field in properties.items():
        rule = field.get("x-agrees-with")
        if rule is None:
            continue
        own = Draft202012Validator({k: v for k, v in field.items() if k != "x-agrees-with"})
        for row in rows:
            if not isinstance(row, dict) or name not in row or row[name] is None or not own.is_valid(row[name]):
                continue
            if _readable(row.get(rule["from"])):
                moment = pd.Series([pd.Timestamp(row[rule["from"]][:19])])
                row[name] = resolve(rule["using"], FILLS)(moment).iloc[0]
    return case


def _readable(value: object) -> bool:
    return isinstance(value, str) and bool(ISO_DAY.fullmatch(value) or ISO_MOMENT.fullmatch(value)) and _in_range(value)


def _in_range(value: str) -> bool:
    try:
        pd.Timestamp(value[:19])
    except (ValueError, OverflowError):
        return False
    return True
