"""What the BentoML service needs beyond the model: settings, limits, auth, metrics, error bodies.

Kept out of `service/app.py` so the service stays a thin class and this stays testable.
"""

from __future__ import annotations

import hmac
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from prometheus_client import Counter, Gauge, Histogram

from tiffin import settings
from tiffin.contract import json_schema
from tiffin.db import engine_for
from tiffin.inference import Scorer
from tiffin.predlog import AsyncLogger
from tiffin.registry import SPEC_FILE, from_store
from tiffin.spec import DatasetSpec

__all__ = ["SPEC_FILE", "GuardMiddleware", "Metrics", "ServiceConfig", "load_scorer", "model_tag"]


@dataclass(frozen=True)
class ServiceConfig:
    workers: int = 2
    max_rows: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    max_concurrency: int = 64
    timeout_seconds: int = 10
    api_token: str | None = None
    access_log: bool = False
    log_sample: float = 0.1  # share of requests written to the prediction log (0: none)
    log_db_url: str = settings.DEFAULT_DB_URL

    @classmethod
    def from_env(cls) -> ServiceConfig:
        """TIFFIN_WORKERS, TIFFIN_MAX_ROWS, TIFFIN_MAX_BODY_BYTES, TIFFIN_MAX_CONCURRENCY,
        TIFFIN_TIMEOUT_SECONDS, TIFFIN_API_TOKEN, TIFFIN_ACCESS_LOG, TIFFIN_LOG_SAMPLE, TIFFIN_DB_URL."""
        env = os.environ.get
        return cls(
            workers=int(env("TIFFIN_WORKERS", cls.workers)),
            max_rows=int(env("TIFFIN_MAX_ROWS", cls.max_rows)),
            max_body_bytes=int(env("TIFFIN_MAX_BODY_BYTES", cls.max_body_bytes)),
            max_concurrency=int(env("TIFFIN_MAX_CONCURRENCY", cls.max_concurrency)),
            timeout_seconds=int(env("TIFFIN_TIMEOUT_SECONDS", cls.timeout_seconds)),
            api_token=env("TIFFIN_API_TOKEN") or None,
            access_log=env("TIFFIN_ACCESS_LOG", "false").lower() in ("1", "true", "yes"),
            log_sample=float(env("TIFFIN_LOG_SAMPLE", cls.log_sample)),
            log_db_url=settings.db_url(),
        )


def model_tags() -> tuple[str, str | None]:
    """(champion, challenger or None): TIFFIN_MODEL / TIFFIN_CHALLENGER, else models/champion.json."""
    champion, challenger = settings.serving_tags()
    if champion is None:
        raise LookupError("no model to serve: run `make repro` (registers one) or set TIFFIN_MODEL=name:version")
    return champion, challenger


def model_tag() -> str:
    """The model that answers: TIFFIN_MODEL, else the champion (models/champion.json), else the registered one."""
    return model_tags()[0]


def load_scorer(stored_model: Any) -> Scorer:
    loaded = from_store(stored_model)
    return Scorer(loaded.pipeline, loaded.spec)


def prediction_logger(config: ServiceConfig, spec: DatasetSpec, tag: str, shadow: Any | None) -> AsyncLogger | None:
    """The API's prediction log (sampled, written by a thread); the shadow model scores the same rows there."""
    if config.log_sample <= 0:
        return None
    challenger = None if shadow is None else (str(shadow.tag), load_scorer(shadow).predict)
    return AsyncLogger(
        engine_for(config.log_db_url), spec, tag, sample=config.log_sample, shadow=challenger,
        on_dropped=LOG_DROPPED.inc, on_written=lambda role, rows: LOGGED.labels(role=role).inc(rows),
    )  # fmt: skip


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


@dataclass(frozen=True)
class Refusal:
    status: int
    body: dict[str, Any]


def refuse_size(rows: list, max_rows: int) -> Refusal | None:
    if not rows:
        return Refusal(400, {"error": "`rows` is empty: send at least one record", "detail": []})
    if len(rows) > max_rows:
        message = f"{len(rows)} rows is over the limit of {max_rows} a request (TIFFIN_MAX_ROWS): split the request"
        return Refusal(400, {"error": message, "detail": []})
    return None


def problems_body(problems: list[dict], rows: int) -> dict[str, Any]:
    bad = len({problem["row"] for problem in problems})
    return {"error": f"{bad} of {rows} rows break the contract; nothing was predicted", "detail": problems}


# -- metrics (prometheus_client; BentoML aggregates them across workers at /metrics) -------------

_VALUE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, float("inf"))
PREDICTIONS = Counter("tiffin_predictions", "Rows predicted", ["model"])
REJECTED = Counter("tiffin_rejected_rows", "Problems found in rejected rows, by field and rule", ["field", "rule"])
PREDICTED_VALUE = Histogram("tiffin_prediction_value", "Predicted values", ["model"], buckets=_VALUE_BUCKETS)
LOGGED = Counter("tiffin_prediction_log_rows", "Rows written to the prediction log, by role", ["role"])
LOG_DROPPED = Counter("tiffin_prediction_log_dropped", "Sampled rows the prediction log could not keep")
MODEL_INFO = Gauge("tiffin_model_info", "The model this service answers with", ["model"], multiprocess_mode="max")


class Metrics:
    def __init__(self, tag: str) -> None:
        self.predictions = PREDICTIONS.labels(model=tag)
        self.values = PREDICTED_VALUE.labels(model=tag)
        MODEL_INFO.labels(model=tag).set(1)

    def served(self, predictions: list[float]) -> None:
        self.predictions.inc(len(predictions))
        observe_many(self.values, predictions)

    @staticmethod
    def rejected(problems: list[dict]) -> None:
        for problem in problems:
            REJECTED.labels(field=problem["field"], rule=problem["rule"]).inc()


def observe_many(histogram: Any, values: list[float]) -> None:
    """Histogram.observe for many values at once: one increment a bucket, not one call a value.

    prometheus_client has no bulk observe, and 1,000 calls cost more than the prediction itself.
    This adds to the same per-bucket counters (`_buckets`, `_sum`) that `observe` uses.
    """
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(np.sum(values)))


# -- auth and body size, before BentoML reads the body ---------------------------------------------

_OPEN_PATHS = ("/livez", "/readyz", "/healthz", "/metrics", "/docs", "/docs.json", "/schema.json")


class GuardMiddleware:
    """Bearer-token auth (when TIFFIN_API_TOKEN is set) and a body-size limit, as plain ASGI."""

    def __init__(self, app: Any, config: ServiceConfig) -> None:
        self.app = app
        self.config = config

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["path"] == "/docs.json":
            await self.app(scope, receive, rewriting_send(send, _describing_errors))
            return
        if scope["type"] != "http" or scope["path"] in _OPEN_PATHS or scope["method"] in ("GET", "HEAD"):
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        if self.config.api_token and not self._authorised(headers.get(b"authorization", b"")):
            await _respond(send, 401, {"error": "missing or wrong bearer token"}, [(b"www-authenticate", b"Bearer")])
            return
        media_type = headers.get(b"content-type", b"application/json").split(b";")[0].strip().lower()
        if media_type != b"application/json":  # BentoML would try other parsers, and 500 on some
            body = {"error": f"send JSON (Content-Type: application/json), not {media_type.decode()!r}"}
            await _respond(send, 415, body)
            return
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.config.max_body_bytes:
            await _respond(send, 413, self._too_large(int(length)))
            return
        if length is None:  # chunked: read it here, up to the limit, then hand it on
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if len(body) > self.config.max_body_bytes:
                    await _respond(send, 413, self._too_large(len(body)))
                    return
                if not message.get("more_body"):
                    break
            receive = _replay(body)
        await self.app(scope, receive, send)

    def _authorised(self, header: bytes) -> bool:
        expected = f"Bearer {self.config.api_token}".encode()
        return hmac.compare_digest(header, expected)

    def _too_large(self, size: int) -> dict[str, Any]:
        limit = self.config.max_body_bytes
        return {"error": f"body of {size} bytes is over the limit of {limit} (TIFFIN_MAX_BODY_BYTES)", "detail": []}


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
        if operation is None or path in _OPEN_PATHS:
            continue
        for status, description in _ERROR_RESPONSES.items():
            content = {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}
            operation.setdefault("responses", {})[status] = {"description": description, "content": content}
    return document


def rewriting_send(send: Any, rewrite: Callable[[bytes, list], bytes]) -> Any:
    """An ASGI `send` that buffers a 200 response, rewrites its body (given the headers) and sends it
    with the new length."""
    start: dict = {}
    body = b""

    async def rewritten(message: dict) -> None:
        nonlocal start, body
        if message["type"] == "http.response.start":
            start = message
            return
        body += message.get("body", b"")
        if message.get("more_body"):
            return
        headers = start.get("headers", [])
        if start.get("status") == 200:
            body = rewrite(body, headers)
        headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})

    return rewritten


def _describing_errors(body: bytes, _: list) -> bytes:
    return json.dumps(describe_errors(json.loads(body))).encode()


def _replay(body: bytes) -> Any:
    sent = False

    async def receive() -> dict:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return receive


async def _respond(send: Any, status: int, body: dict, headers: list | None = None) -> None:
    payload = json.dumps(body).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]
            + (headers or []),
        }
    )
    await send({"type": "http.response.body", "body": payload})
