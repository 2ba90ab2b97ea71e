"""Four times its capacity for 20 s: the service sheds fast, answers what it accepts, and keeps its memory."""

from __future__ import annotations

import csv
from pathlib import Path

import pandas as pd
import pytest

from tiffin.core.spec import load_spec
from tiffin.jobs.overload import overload
from tiffin.serving.openapi import request_json
from tiffin.storage import settings

from ..conftest import Project
from .conftest import serve

pytestmark = pytest.mark.slow


def test_past_capacity_the_service_sheds_fast_and_stays_bounded(reproduced_project: Project, tmp_path: Path) -> None:
    spec = load_spec(reproduced_project.path / "specs/bike_sharing.yaml")
    records = tmp_path / "records.json"  # the held-out rows, as clients send them
    records.write_text(
        request_json(pd.read_parquet(reproduced_project.path / "data/split/test.parquet")[spec.input_columns], spec)
    )
    server = serve(reproduced_project, tmp_path, TIFFIN_LOG_SAMPLE="0")
    try:
        result = overload(server, records, tmp_path / "overload", factor=4, seconds=20)
    finally:
        server.stop()
    print(result.table())
    assert result.shed_share > 0.2, "the load did not overload the service"
    # >= 99 % answered 200 or 429/503, and no other 5xx at all.
    assert result.other <= 0.01 * result.answers and result.probe["other"] == 0
    with open(tmp_path / "overload/overload/locust_failures.csv") as failures:
        assert not [row for row in csv.DictReader(failures) if row["Error"].startswith("5")]
    # Shedding is fast: a client waits less for a 429 than half the accepted requests wait for their answer.
    assert result.probe["shed_p99_ms"] < result.accepted_p50_ms
    # What is accepted is answered within the time-out; memory stays flat.
    assert result.accepted_max_ms < int(settings.env("TIFFIN_TIMEOUT_SECONDS")) * 1000
    for before, after in zip(result.worker_rss_mib_before, result.worker_rss_mib_after, strict=True):
        assert after < before * 1.1 + 20
