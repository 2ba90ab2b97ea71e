"""What the predict endpoint does beyond scoring: size limits, error bodies, and its prediction log."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import pandas as pd
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from tiffin.core.spec import DatasetSpec
from tiffin.features.online import OnlineHistory
from tiffin.serving.config import ServiceConfig
from tiffin.serving.metrics import HISTORY_REFRESHED, LOG_DROPPED, LOGGED
from tiffin.serving.openapi import ECHO_CHARACTERS
from tiffin.serving.scorer import Scorer
from tiffin.storage.database import engine_for
from tiffin.storage.modelstore import LoadedModel
from tiffin.storage.predlog import AsyncLogger

BENTOML_REQUEST_ERRORS = "bentoml._internal.server.http_app"  # the logger of BentoML's `log_exception`


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
    detail = [{**problem, "value": cut(problem["value"])} for problem in problems]
    return {"error": f"{bad} of {rows} rows break the contract; nothing was predicted", "detail": detail}


def cut(text: str, limit: int = ECHO_CHARACTERS) -> str:
    """An echoed value, cut and marked as cut past `limit` characters."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… (cut: {len(text):,} characters)"


class OneLineClientErrors(logging.Filter):
    """BentoML logs a request it cannot parse (a client's mistake: a 400) with a traceback and a snippet of the
    input; keep one line without the input: the client got the details in its 400."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, ValidationError):
            kinds = sorted({problem["type"] for problem in error.errors(include_input=False)})
            where = record.getMessage().replace("Exception on", "Refused")
            record.msg = f"{where}: 400, {error.error_count()} request error(s) ({', '.join(kinds)})"
            record.args, record.exc_info, record.exc_text = (), None, None
            record.levelno, record.levelname = logging.INFO, "INFO"
        return True


def quiet_client_errors() -> None:
    """Install `OneLineClientErrors` on the logger BentoML reports request errors with (once per process)."""
    logger = logging.getLogger(BENTOML_REQUEST_ERRORS)
    if not any(isinstance(f, OneLineClientErrors) for f in logger.filters):
        logger.addFilter(OneLineClientErrors())


def database(config: ServiceConfig, spec: DatasetSpec) -> Engine:
    """The worker's one engine for the log and (a spec with history features) the source, which must then exist."""
    return engine_for(config.log_db_url, must_exist=spec.history is not None)


def online_history(config: ServiceConfig, spec: DatasetSpec, engine: Engine) -> OnlineHistory | None:
    """For a spec with history features: this worker's lookup, built now and kept fresh by a thread."""
    if spec.history is None:
        return None
    history = OnlineHistory(
        engine, spec, keep=pd.Timedelta(days=config.history_keep_days),
        refresh_seconds=config.history_refresh_seconds, on_refresh=HISTORY_REFRESHED.set,
    )  # fmt: skip
    return history.start()


def prediction_logger(
    config: ServiceConfig, spec: DatasetSpec, tag: str, shadow: LoadedModel | None, engine: Engine
) -> AsyncLogger | None:
    """The API's prediction log (sampled, written by a thread); the shadow model scores the same rows there."""
    if config.log_sample <= 0:
        return None
    challenger = None
    if shadow is not None:
        # A challenger reading history features the champion does not look up keeps a lookup of its own.
        history = online_history(config, shadow.spec, engine) if shadow.spec.history_not_in(spec) else None
        challenger = (shadow.tag, Scorer.from_model(shadow, history).predict_logged)
    return AsyncLogger(
        engine, spec, tag, sample=config.log_sample, shadow=challenger, flush_seconds=config.log_flush_seconds,
        on_dropped=LOG_DROPPED.inc, on_written=lambda role, rows: LOGGED.labels(role=role).inc(rows),
    )  # fmt: skip
