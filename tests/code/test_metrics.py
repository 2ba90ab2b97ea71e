"""`observe_many` writes prometheus_client's bucket counters directly (it has no bulk observe): it must count
exactly as one `observe` a value does, or a prometheus_client upgrade has moved the internals it relies on."""

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from tiffin.serving.metrics import observe_many


def samples(histogram_name: str, registry: CollectorRegistry) -> dict[tuple, float]:
    return {
        (sample.name.removeprefix(histogram_name), tuple(sorted(sample.labels.items()))): sample.value
        for metric in registry.collect()
        for sample in metric.samples
        if metric.name == histogram_name and not sample.name.endswith("_created")
    }


def test_observe_many_counts_exactly_as_observing_one_value_at_a_time() -> None:
    registry = CollectorRegistry()
    buckets = (0, 1, 5, 10, float("inf"))
    bulk = Histogram("bulk", "in one call", buckets=buckets, registry=registry)
    single = Histogram("single", "a call a value", buckets=buckets, registry=registry)
    values = [-2.0, 0.0, 0.5, 1.0, 3.0, 5.0, 5.000001, 7.5, 10.0, 100.0, *np.random.default_rng(0).normal(4, 3, 500)]
    observe_many(bulk, values)
    for value in values:
        single.observe(value)
    bulk_samples, single_samples = samples("bulk", registry), samples("single", registry)
    total = ("_sum", ())
    assert bulk_samples.pop(total) == pytest.approx(single_samples.pop(total), rel=1e-12)  # summed in another order
    assert bulk_samples == single_samples  # every bucket, and the count, exactly
    assert bulk_samples[("_count", ())] == len(values)
