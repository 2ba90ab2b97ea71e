"""The service's settings, from the environment: workers, limits, auth, the prediction log."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import bentoml

from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage import settings
from tiffin.storage.champion import serving_models
from tiffin.storage.modelstore import SPEC_FILE


@dataclass(frozen=True)
class ServiceConfig:
    workers: int = 2
    max_rows: int = 10_000
    max_body_bytes: int = 8 * 1024 * 1024
    max_concurrency: int = 32  # per worker: requests in progress (read, queued, scored); beyond it a 429
    timeout_seconds: int = 10
    api_token: str | None = None
    access_log: bool = False
    log_sample: float = 0.1  # share of requests written to the prediction log (0: none)
    log_flush_seconds: float = 1.0  # how often the log's thread writes what is queued (each write costs the loop)
    log_db_url: str = settings.DEFAULT_DB_URL  # the source database too (history features are read from it)
    history_refresh_seconds: float = 10.0  # how often a worker checks for a new materialization of history
    history_keep_days: int = 35  # days of history a worker keeps (at least the features' reach)

    @classmethod
    def from_env(cls) -> ServiceConfig:
        """TIFFIN_WORKERS, TIFFIN_MAX_ROWS, TIFFIN_MAX_BODY_BYTES, TIFFIN_MAX_CONCURRENCY,
        TIFFIN_TIMEOUT_SECONDS, TIFFIN_API_TOKEN, TIFFIN_ACCESS_LOG, TIFFIN_LOG_SAMPLE, TIFFIN_LOG_FLUSH_SECONDS,
        TIFFIN_DB_URL, TIFFIN_HISTORY_REFRESH_SECONDS, TIFFIN_HISTORY_KEEP_DAYS."""
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
            log_flush_seconds=float(env("TIFFIN_LOG_FLUSH_SECONDS", cls.log_flush_seconds)),
            log_db_url=settings.db_url(),
            history_refresh_seconds=float(env("TIFFIN_HISTORY_REFRESH_SECONDS", cls.history_refresh_seconds)),
            history_keep_days=int(env("TIFFIN_HISTORY_KEEP_DAYS", cls.history_keep_days)),
        )

    def bentoml_options(self) -> dict[str, Any]:
        """The `@bentoml.service` arguments these settings decide."""
        return {
            "workers": self.workers,
            # No BentoML `max_concurrency`: it is split across workers, answers 429 without `Retry-After`, and
            # never sees requests that queue on the event loop; the limit is GuardMiddleware's, per worker.
            "traffic": {"timeout": self.timeout_seconds},
            "logging": {"access": {"enabled": self.access_log}},
        }


@dataclass(frozen=True)
class Deployment:
    """What one service serves, resolved once: its settings, the champion and challenger, the champion's spec."""

    config: ServiceConfig
    champion: str
    challenger: str | None
    spec: DatasetSpec  # the champion's own (its contract is the request's form)

    @classmethod
    def resolve(cls) -> Deployment:
        models = serving_models()
        stored = bentoml.models.BentoModel(models.champion).stored  # BentoML's own store: $BENTOML_HOME
        if stored is None:
            raise LookupError(
                f"{models.champion} is not in BentoML's model store (BENTOML_HOME={settings.model_store_home_env()}): "
                "`make serve` serves the project's store (.bentoml/), or set BENTOML_HOME to the store that has it"
            )
        return cls(ServiceConfig.from_env(), models.champion, models.challenger, load_spec(stored.path_of(SPEC_FILE)))
