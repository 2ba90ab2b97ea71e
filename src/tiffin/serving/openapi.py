"""The request's documented form: the contract's fields as JSON Schema, an example record, and error bodies
described as they are really sent, for /docs.json."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from tiffin.core.contract import json_schema
from tiffin.core.spec import DatasetSpec

OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json")


def request_json(frame: pd.DataFrame) -> str:
    """Canonical rows as a client sends them: a JSON array of records, dates as YYYY-MM-DD."""
    frame = frame.copy()
    for name in frame.select_dtypes("datetime").columns:
        frame[name] = frame[name].dt.strftime("%Y-%m-%d")
    return frame.to_json(orient="records")


def example_record(spec: DatasetSpec) -> dict[str, Any]:
    return {name: spec.columns[name].example for name in spec.input_columns if spec.columns[name].example is not None}


def rows_json_schema(spec: DatasetSpec, max_rows: int) -> dict[str, Any]:
    """The request's `rows`: the contract's fields, types, ranges and an example, for /docs.json."""
    required = [n for n in spec.input_columns if not spec.columns[n].nullable and not spec.columns[n].fill_missing]
    return {
        "type": "array",
        "minItems": 1,
        "maxItems": max_rows,
        "items": {
            "type": "object",
            "title": f"{spec.name} record",
            "properties": {name: json_schema(spec.columns[name]) for name in spec.input_columns},
            "required": required,
        },
        "examples": [[example_record(spec)]],
    }


PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "required": ["row", "field", "value", "rule"],
    "properties": {
        "row": {"type": "integer", "description": "Position of the record in `rows`"},
        "field": {"type": "string"},
        "value": {"type": "string", "description": "The value received, as text"},
        "rule": {"type": "string", "description": "The contract rule it breaks"},
    },
}
ERROR_SCHEMA = {
    "type": "object",
    "title": "Error",
    "required": ["error"],
    "properties": {
        "error": {"type": "string"},
        "detail": {
            "type": "array",
            "description": "Contract problems (row, field, value, rule), or request-parsing errors",
            "items": {"anyOf": [{"$ref": "#/components/schemas/Problem"}, {"type": "object"}]},
        },
    },
}
_ERROR_RESPONSES = {
    "400": "Not JSON of the documented form, more rows than TIFFIN_MAX_ROWS, or rows break the contract",
    "401": "TIFFIN_API_TOKEN is set and the bearer token is missing or wrong",
    "413": "A body over TIFFIN_MAX_BODY_BYTES",
    "415": "A body that is not application/json",
    "429": "Over the service's concurrency limit: retry later",
}


def describe_errors(document: dict) -> dict:
    """BentoML documents error bodies with a string `detail`; describe the object really sent."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas["Problem"] = PROBLEM_SCHEMA
    schemas["InvalidArgument"] = ERROR_SCHEMA
    schemas["Error"] = ERROR_SCHEMA
    for path, item in document.get("paths", {}).items():
        operation = item.get("post")
        if operation is None or path in OPEN_PATHS:
            continue
        for status, description in _ERROR_RESPONSES.items():
            content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            operation.setdefault("responses", {})[status] = {"description": description, "content": content}
    return document


def describing_errors(body: bytes, _: list) -> bytes:
    return json.dumps(describe_errors(json.loads(body))).encode()
