"""Feature definitions; make_repos.sh copies this file into each $FEAST_BENCH_DIR/repo_<store>."""

import os
from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource
from feast.types import Float64
from feast.value_type import ValueType

series = Entity(name="series_id", join_keys=["series_id"], value_type=ValueType.INT64)

FEATURES = ["lag_1", "lag_2", "lag_3", "lag_24", "lag_168", "mean_24"]
SCHEMA = [Field(name=f, dtype=Float64) for f in FEATURES]
B = os.environ.get("FEAST_BENCH_DIR", "/tmp/feast-bench")

src_a = FileSource(
    name="bike_a_source",
    path=f"{B}/data/bike_a.parquet",
    timestamp_field="event_timestamp",
)
src_b = FileSource(
    name="bike_b_source",
    path=f"{B}/data/bike_b.parquet",
    timestamp_field="event_timestamp",
)


def view(name: str, entities: list[Entity], source: FileSource) -> FeatureView:
    return FeatureView(name=name, entities=entities, ttl=timedelta(days=2), schema=SCHEMA, source=source, online=True)


bike_a = view("bike_a", [series], src_a)
bike_b = view("bike_b", [series], src_b)

# ---- Extra (beyond the brief): full-history views. Feast's online store keeps only the
# latest row per entity key, so to serve *every* hour online the hour must be part of the key.
hour = Entity(name="hour_key", join_keys=["hour_key"], value_type=ValueType.INT64)
bike_a_hist = view("bike_a_hist", [series, hour], src_a)
bike_b_hist = view("bike_b_hist", [series, hour], src_b)
