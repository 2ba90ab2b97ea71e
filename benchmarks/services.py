"""Reference services for `make bench`, with the same BentoML settings as the real service.

- NoOp: answers a constant; the ceiling BentoML itself allows on this machine.
- StockPipeline: the obvious way, a pandas DataFrame per request into a stock sklearn Pipeline.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

from typing import Any

import bentoml

from tiffin.serving.config import ServiceConfig

CONFIG = ServiceConfig.from_env()
SETTINGS = CONFIG.bentoml_options()


@bentoml.service(name="noop", **SETTINGS)
class NoOp:
    @bentoml.api(route="/predict")
    async def predict(self, rows: list[dict[str, Any]]) -> dict:
        return {"predictions": [0.0] * len(rows), "model": "noop"}


@bentoml.service(name="stock", **SETTINGS)
class StockPipeline:
    def __init__(self) -> None:
        import joblib

        self.pipeline = joblib.load(os.environ["BENCH_STOCK_MODEL"])

    @bentoml.api(route="/predict")
    def predict(self, rows: list[dict[str, Any]]) -> dict:
        import pandas as pd

        return {"predictions": self.pipeline.predict(pd.DataFrame(rows)).tolist(), "model": "stock"}
