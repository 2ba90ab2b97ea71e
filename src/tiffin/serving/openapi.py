"""The request's documented form: the contract's fields as JSON Schema, an example record, and error bodies
described as they are really sent, for /docs.json."""

from __future__ import annotations

import json
from typing import Annotated, Any

import pandas as pd
from pydantic import BaseModel, ConfigDict, Field, WithJsonSchema, create_model

from tiffin.core.contract import json_schema
from tiffin.core.spec import DatasetSpec

ECHO_CHARACTERS = 200  # a value echoed in an error body is cut here: a 7 MB bad value is not sent back
OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs.json", "/schema.json")


def request_json(frame: pd.DataFrame, spec: DatasetSpec) -> str:
    """Canonical rows as a client sends them: a JSON array of records, dates as YYYY-MM-DD and moments as
    YYYY-MM-DDTHH:MM:SS (local time of the spec's zone, as the contract reads a time without offset)."""
    frame = frame.copy()
    for name in frame.select_dtypes("datetime").columns:
        form = "%Y-%m-%d" if spec.columns[name].type == "date" else "%Y-%m-%dT%H:%M:%S"
        frame[name] = frame[name].dt.strftime(form)
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
            "additionalProperties": spec.unknown_fields == "ignore",  # an unknown field is a 400 by default
        },
        "examples": [[example_record(spec)]],
    }


def record_schema(node: object) -> dict | None:
    """The request record's JSON Schema inside an OpenAPI document: the object `rows_json_schema` titles
    `<dataset> record` (a client reads the contract from the service this way)."""
    if isinstance(node, dict):
        if str(node.get("title", "")).endswith(" record") and "properties" in node:
            return node
        node = list(node.values())
    if isinstance(node, list):
        return next((found for child in node if (found := record_schema(child))), None)
    return None


def request_model(spec: DatasetSpec, max_rows: int) -> type[BaseModel]:
    """The predict request: `{"rows": [...]}` and nothing else (another top-level key is a 400, not ignored)."""
    rows = Annotated[list[dict[str, Any]], WithJsonSchema(rows_json_schema(spec, max_rows)), Field()]
    return create_model("PredictRequest", __config__=ConfigDict(extra="forbid"), rows=rows)


PROBLEM_SCHEMA = {
    "type": "object",
    "title": "Problem",
    "required": ["row", "field", "value", "rule"],
    "properties": {
        "row": {"type": "integer", "description": "Position of the record in `rows`"},
        "field": {"type": "string"},
        "value": {
            "type": "string",
            "description": f"The value received, as text (cut to {ECHO_CHARACTERS} characters)",
        },
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
ERROR_RESPONSES = {
    "400": "Not JSON of the documented form, more rows than TIFFIN_MAX_ROWS, or rows break the contract",
    "401": "TIFFIN_API_TOKEN is set and the bearer token is missing or wrong",
    "413": "A body over TIFFIN_MAX_BODY_BYTES",
    "415": "A body that is not application/json",
    "429": "Over the worker's concurrency limit (TIFFIN_MAX_CONCURRENCY): retry after `Retry-After` seconds",
    "504": "Not answered within TIFFIN_TIMEOUT_SECONDS",
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
        if "requestBody" in operation:
            operation["requestBody"]["required"] = True  # BentoML leaves it out; without a body: a 400
        for status, description in ERROR_RESPONSES.items():
            content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            operation.setdefault("responses", {})[status] = {"description": description, "content": content}
    return document


def describing_errors(body: bytes, _: list) -> bytes:
    return json.dumps(describe_errors(json.loads(body))).encode()


if __name__ == "__main__":  # `make serve` prints a request a newcomer can send: the champion's example record
    from tiffin.serving.config import Deployment

    print(json.dumps({"rows": [example_record(Deployment.resolve().spec)]}))
