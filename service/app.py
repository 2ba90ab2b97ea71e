"""The Bento: a thin BentoML service over the champion in the model store.

`make serve` answers on port 3000; `bentoml build` packages the same service. The contract, the feature
code and the fast scorer all live in the `tiffin` package; this module only wires them to HTTP: limits,
auth, metrics, readiness and error bodies. Which model answers is `tiffin.storage.champion.serving_models`
(the champion, `TIFFIN_MODEL` to override); the model comes from BentoML's own model store, `$BENTOML_HOME`
(`make serve` points it at the project's `.bentoml/`).
"""

import asyncio
import gc
from typing import Any

import bentoml
from pydantic import BaseModel, Field
from starlette.responses import JSONResponse
from threadpoolctl import threadpool_limits

from tiffin.serving import api, bentoml_fixes, dashboard
from tiffin.serving.asgi import GuardMiddleware
from tiffin.serving.config import Deployment
from tiffin.serving.metrics import Metrics
from tiffin.serving.openapi import example_record, request_model
from tiffin.serving.scorer import Scorer
from tiffin.storage.modelstore import from_store
from tiffin.ui import pages as ui


class Predictions(BaseModel):
    predictions: list[float]
    model: str


class HistoryPredictions(Predictions):
    """A model with history features: their values are looked up, and rows whose history was stale are counted."""

    stale_features: int = Field(description="Rows answered with null history features (their series' history is "
                                "stale or missing; see the spec's history.stale_after)")  # fmt: skip


# BentoML reads the models to package, the request's schema and the service's options from the class: one
# resolution of the settings, the models and the champion's spec, here.
DEPLOYMENT = Deployment.resolve()
Answer = HistoryPredictions if DEPLOYMENT.spec.history else Predictions


class Tiffin:
    deployment = DEPLOYMENT
    config = deployment.config
    model = bentoml.models.BentoModel(deployment.champion)
    # A challenger runs in shadow: scored on the logged rows, off the request path; never answers.
    shadow = bentoml.models.BentoModel(deployment.challenger) if deployment.challenger else None

    def __init__(self) -> None:
        # HistGradientBoosting's OpenMP threads spin between calls and double the CPU per request: one
        # thread per worker, and one worker per core, serve more.
        self.threads = threadpool_limits(limits=1, user_api="openmp")
        self.turn = asyncio.Lock()  # one request scored at a time, one per turn of the event loop (see predict)
        api.quiet_client_errors()
        champion = from_store(self.model, spec=self.deployment.spec)
        engine = api.database(self.config, champion.spec)
        self.history = api.online_history(self.config, champion.spec, engine)  # for a spec with history features
        self.scorer = Scorer.from_model(champion, self.history)
        self.tag = champion.tag
        self.metrics = Metrics(self.tag)
        shadow = from_store(self.shadow) if self.shadow is not None else None
        self.log = api.prediction_logger(self.config, champion.spec, self.tag, shadow, engine)
        self.scorer.score([example_record(champion.spec)])  # warm up before /readyz says yes
        # What is loaded now lives as long as the worker: out of the collector's sight, so that a full collection
        # (over the model, pandas and scikit-learn) does not stall requests for a fraction of a second.
        gc.freeze()
        self.ready = True

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.log is not None:
            self.log.close()
        if self.history is not None:
            self.history.stop()

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.api(route="/predict", input_spec=request_model(deployment.spec, config.max_rows))
    async def predict(self, rows: list[dict[str, Any]]) -> Answer:
        """Predict one or many records of the contract's canonical form; all or nothing."""
        # Scoring is synchronous and short, so it runs on the event loop (a thread would cost a hand-off and
        # fight the loop for the GIL). Scoring one request per turn of the loop means the loop reads what
        # has arrived between any two: admitted requests wait here, counted by GuardMiddleware, which
        # refuses the one past the limit at once (a 429), instead of requests waiting unseen in the socket.
        async with self.turn:
            await asyncio.sleep(0)
            return self.answer(rows)

    def answer(self, rows: list[dict[str, Any]]) -> Answer | JSONResponse:
        if refused := api.refuse_size(rows, self.config.max_rows):
            return JSONResponse(refused.body, status_code=refused.status)
        scored = self.scorer.score(rows)
        if scored.problems:
            self.metrics.rejected(scored.problems)
            return JSONResponse(api.problems_body(scored.problems, len(rows)), status_code=400)
        self.metrics.served(scored.predictions, scored.stale)
        if self.log is not None:
            self.log.submit(scored.columns, scored.predictions)
        # A model without history features answers Predictions, which drops the count.
        return Answer(predictions=scored.predictions, model=self.tag, stale_features=scored.stale)


Tiffin = bentoml.service(name="tiffin", **Tiffin.config.bentoml_options())(Tiffin)
Tiffin.add_asgi_middleware(GuardMiddleware, config=Tiffin.inner.config)
dashboard.mount(Tiffin)  # the latest `tiffin monitor` report at /dashboard/, its gauges in /metrics
ui.mount(Tiffin)  # the web interface at /ui/: models, batch runs, monitoring (experiments need a checkout)
# Metrics labelled by route only, and time-outs that do not feed the garbage collector (see bentoml_fixes).
bentoml_fixes.install([api.route for api in Tiffin.apis.values()] + dashboard.ROUTES + ui.ROUTES)
