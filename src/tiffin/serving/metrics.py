"""The service's Prometheus metrics (prometheus_client; BentoML aggregates them across workers at /metrics)."""

from __future__ import annotations

from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge, Histogram

_VALUE_BUCKETS = (0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1_000, 2_000, 5_000, 10_000, float("inf"))
PREDICTIONS = Counter("tiffin_predictions", "Rows predicted", ["model"])
REJECTED = Counter("tiffin_rejected_rows", "Problems found in rejected rows, by field and rule", ["field", "rule"])
PREDICTED_VALUE = Histogram("tiffin_prediction_value", "Predicted values", ["model"], buckets=_VALUE_BUCKETS)
LOGGED = Counter("tiffin_prediction_log_rows", "Rows written to the prediction log, by role", ["role"])
LOG_DROPPED = Counter("tiffin_prediction_log_dropped", "Sampled rows the prediction log could not keep")
STALE_HISTORY = Counter("tiffin_stale_history_rows", "Rows answered with null history features (stale or missing)")
HISTORY_REFRESHED = Gauge(
    "tiffin_history_refreshed_timestamp_seconds",
    "When the worker with the oldest history grid rebuilt it (unix time): its freshness",
    multiprocess_mode="min",
)
MODEL_INFO = Gauge("tiffin_model_info", "The model this service answers with", ["model"], multiprocess_mode="max")


class Metrics:
    def __init__(self, tag: str) -> None:
        self.predictions = PREDICTIONS.labels(model=tag)
        self.values = PREDICTED_VALUE.labels(model=tag)
        MODEL_INFO.labels(model=tag).set(1)

    def served(self, predictions: list[float], stale: int = 0) -> None:
        self.predictions.inc(len(predictions))
        observe_many(self.values, predictions)
        if stale:
            STALE_HISTORY.inc(stale)

    @staticmethod
    def rejected(problems: list[dict]) -> None:
        for problem in problems:
            REJECTED.labels(field=problem["field"], rule=problem["rule"]).inc()


def observe_many(histogram: Any, values: list[float]) -> None:
    """Histogram.observe for many values at once: one increment a bucket, not one call a value.

    prometheus_client has no bulk observe, and 1,000 calls cost more than the prediction itself.
    This adds to the same per-bucket counters (`_buckets`, `_sum`) that `observe` uses.
    """
    if len(values) <= 8:  # a few values: observe's own bucket search is cheaper than numpy's per-call cost
        for value in values:
            histogram.observe(value)
        return
    bounds = np.asarray(histogram._upper_bounds)
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds))
    for bucket, count in zip(histogram._buckets, counts, strict=True):
        if count:
            bucket.inc(int(count))
    histogram._sum.inc(float(np.sum(values)))
