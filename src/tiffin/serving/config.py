"""The service's settings, from the environment: workers, limits, auth, the prediction log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import bentoml

from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage import settings
from tiffin.storage.champion import serving_models
from tiffin.storage.modelstore import SPEC_FILE


@dataclass(frozen=True)
class ServiceConfig:
    """The service's settings; `from_env` reads them (defaults and meanings: `settings.ENVIRONMENT`)."""

    workers: int
    max_rows: int
    max_body_bytes: int
    max_concurrency: int  # per worker: requests in progress (read, queued, scored); beyond it a 429
    timeout_seconds: int
    api_token: str | None
    access_log: bool
    log_sample: float  # share of requests written to the prediction log (0: none)
    log_flush_seconds: float  # how often the log's thread writes what is queued (each write costs the loop)
    log_db_url: str  # the source database too (history features are read from it)
    history_refresh_seconds: float  # how often a worker checks for a new materialization of history
    history_keep_days: int  # days of history a worker keeps (at least the features' reach)

    @classmethod
    def from_env(cls) -> ServiceConfig:
        env = settings.env
        return cls(
            workers=int(env("TIFFIN_WORKERS")),
            max_rows=int(env("TIFFIN_MAX_ROWS")),
            max_body_bytes=int(env("TIFFIN_MAX_BODY_BYTES")),
            max_concurrency=int(env("TIFFIN_MAX_CONCURRENCY")),
            timeout_seconds=int(env("TIFFIN_TIMEOUT_SECONDS")),
            api_token=env("TIFFIN_API_TOKEN"),
            access_log=env("TIFFIN_ACCESS_LOG").lower() in ("1", "true", "yes"),
            log_sample=float(env("TIFFIN_LOG_SAMPLE")),
            log_flush_seconds=float(env("TIFFIN_LOG_FLUSH_SECONDS")),
            log_db_url=settings.db_url(),
            history_refresh_seconds=float(env("TIFFIN_HISTORY_REFRESH_SECONDS")),
            history_keep_days=int(env("TIFFIN_HISTORY_KEEP_DAYS")),
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
