"""What the predict endpoint does beyond scoring: size limits, error bodies, and its prediction log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tiffin.core.spec import DatasetSpec
from tiffin.serving.config import ServiceConfig
from tiffin.serving.metrics import LOG_DROPPED, LOGGED
from tiffin.serving.scorer import Scorer
from tiffin.storage.database import engine_for
from tiffin.storage.modelstore import LoadedModel
from tiffin.storage.predlog import AsyncLogger


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


def prediction_logger(
    config: ServiceConfig, spec: DatasetSpec, tag: str, shadow: LoadedModel | None
) -> AsyncLogger | None:
    """The API's prediction log (sampled, written by a thread); the shadow model scores the same rows there."""
    if config.log_sample <= 0:
        return None
    challenger = None if shadow is None else (shadow.tag, Scorer.from_model(shadow).predict)
    return AsyncLogger(
        engine_for(config.log_db_url), spec, tag, sample=config.log_sample, shadow=challenger,
        on_dropped=LOG_DROPPED.inc, on_written=lambda role, rows: LOGGED.labels(role=role).inc(rows),
    )  # fmt: skip
