"""The Bento: a thin BentoML service over the registered model.

`bentoml serve` (from the project root) answers on port 3000; `bentoml build` packages the same
service. The contract, the feature code and the fast scorer all live in the `tiffin` package; this
module only wires them to HTTP: limits, auth, metrics, readiness and error bodies.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

# Inside a built Bento the shared package is plain source under src/ ([tool.bentoml.build] include);
# where it is installed (the project's .venv, an image), the installed one comes first.
sys.path.append(str(Path(__file__).resolve().parents[1] / "src"))

# HistGradientBoosting's OpenMP threads spin between calls and double the CPU per request: one
# thread per worker, and one worker per core, serve more.
os.environ.setdefault("OMP_NUM_THREADS", "1")

from typing import Annotated, Any

from pydantic import BaseModel, WithJsonSchema
from starlette.responses import JSONResponse

from tiffin.settings import use_project_model_store

use_project_model_store()
import bentoml  # noqa: E402

from tiffin import dashboard, serving  # noqa: E402
from tiffin.spec import load_spec  # noqa: E402

CONFIG = serving.ServiceConfig.from_env()
CHAMPION, CHALLENGER = serving.model_tags()
MODEL = bentoml.models.BentoModel(CHAMPION)
SPEC = load_spec(MODEL.stored.path_of(serving.SPEC_FILE))

Rows = Annotated[list[dict[str, Any]], WithJsonSchema(serving.rows_json_schema(SPEC, CONFIG.max_rows))]


class Predictions(BaseModel):
    predictions: list[float]
    model: str


@bentoml.service(
    name="tiffin",
    workers=CONFIG.workers,
    traffic={"timeout": CONFIG.timeout_seconds, "max_concurrency": CONFIG.max_concurrency},
    logging={"access": {"enabled": CONFIG.access_log}},
)
class Tiffin:
    model = MODEL
    # A challenger runs in shadow: scored on the logged rows, off the request path; never answers.
    shadow = bentoml.models.BentoModel(CHALLENGER) if CHALLENGER else None

    def __init__(self) -> None:
        self.scorer = serving.load_scorer(self.model)
        self.tag = str(self.model.tag)
        self.metrics = serving.Metrics(self.tag)
        self.log = serving.prediction_logger(CONFIG, self.scorer.spec, self.tag, self.shadow)
        self.scorer.score([serving.example_record(SPEC)])  # warm up before /readyz says yes
        self.ready = True

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.log is not None:
            self.log.close()

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.api(route="/predict")
    async def predict(self, rows: Rows) -> Predictions:
        """Predict one or many records of the contract's canonical form; all or nothing."""
        if refused := serving.refuse_size(rows, CONFIG.max_rows):
            return JSONResponse(refused.body, status_code=refused.status)
        scored = self.scorer.score(rows)
        if scored.problems:
            self.metrics.rejected(scored.problems)
            return JSONResponse(serving.problems_body(scored.problems, len(rows)), status_code=400)
        self.metrics.served(scored.predictions)
        if self.log is not None:
            self.log.submit(scored.columns, scored.predictions)
        return Predictions(predictions=scored.predictions, model=self.tag)


Tiffin.add_asgi_middleware(serving.GuardMiddleware, config=CONFIG)
dashboard.mount(Tiffin)  # the latest `tiffin monitor` report at /dashboard/, its gauges in /metrics
