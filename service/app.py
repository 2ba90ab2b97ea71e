"""The Bento: a thin BentoML service over the champion in the model store.

`make serve` answers on port 3000; `bentoml build` packages the same service. The contract, the feature
code and the fast scorer all live in the `tiffin` package; this module only wires them to HTTP: limits,
auth, metrics, readiness and error bodies. Which model answers is `tiffin.storage.champion.serving_models`
(the champion, `TIFFIN_MODEL` to override); the model comes from BentoML's own model store, `$BENTOML_HOME`
(`make serve` points it at the project's `.bentoml/`).
"""

from typing import Annotated, Any

import bentoml
from pydantic import BaseModel, WithJsonSchema
from starlette.responses import JSONResponse
from threadpoolctl import threadpool_limits

from tiffin.serving import api, dashboard
from tiffin.serving.asgi import GuardMiddleware
from tiffin.serving.config import Deployment
from tiffin.serving.metrics import Metrics
from tiffin.serving.openapi import example_record, rows_json_schema
from tiffin.serving.scorer import Scorer
from tiffin.storage.modelstore import from_store


class Predictions(BaseModel):
    predictions: list[float]
    model: str


class Tiffin:
    # BentoML reads the models to package, the request's schema and the service's options from the class:
    # one resolution of the settings, the models and the champion's spec, here.
    deployment = Deployment.resolve()
    config = deployment.config
    model = bentoml.models.BentoModel(deployment.champion)
    # A challenger runs in shadow: scored on the logged rows, off the request path; never answers.
    shadow = bentoml.models.BentoModel(deployment.challenger) if deployment.challenger else None

    def __init__(self) -> None:
        # HistGradientBoosting's OpenMP threads spin between calls and double the CPU per request: one
        # thread per worker, and one worker per core, serve more.
        self.threads = threadpool_limits(limits=1, user_api="openmp")
        champion = from_store(self.model, spec=self.deployment.spec)
        self.scorer = Scorer.from_model(champion)
        self.tag = champion.tag
        self.metrics = Metrics(self.tag)
        shadow = from_store(self.shadow) if self.shadow is not None else None
        self.log = api.prediction_logger(self.config, champion.spec, self.tag, shadow)
        self.scorer.score([example_record(champion.spec)])  # warm up before /readyz says yes
        self.ready = True

    @bentoml.on_shutdown
    def flush_log(self) -> None:
        if self.log is not None:
            self.log.close()

    def __is_ready__(self) -> bool:
        return getattr(self, "ready", False)

    @bentoml.api(route="/predict")
    async def predict(
        self,
        rows: Annotated[list[dict[str, Any]], WithJsonSchema(rows_json_schema(deployment.spec, config.max_rows))],
    ) -> Predictions:
        """Predict one or many records of the contract's canonical form; all or nothing."""
        if refused := api.refuse_size(rows, self.config.max_rows):
            return JSONResponse(refused.body, status_code=refused.status)
        scored = self.scorer.score(rows)
        if scored.problems:
            self.metrics.rejected(scored.problems)
            return JSONResponse(api.problems_body(scored.problems, len(rows)), status_code=400)
        self.metrics.served(scored.predictions)
        if self.log is not None:
            self.log.submit(scored.columns, scored.predictions)
        return Predictions(predictions=scored.predictions, model=self.tag)


Tiffin = bentoml.service(name="tiffin", **Tiffin.config.bentoml_options())(Tiffin)
Tiffin.add_asgi_middleware(GuardMiddleware, config=Tiffin.inner.config)
dashboard.mount(Tiffin)  # the latest `tiffin monitor` report at /dashboard/, its gauges in /metrics
