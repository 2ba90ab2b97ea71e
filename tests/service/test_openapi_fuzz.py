"""Schemathesis against the service's own /docs.json: no 5xx, and answers match the document."""

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import hypothesis.strategies as st
import joblib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec

from ..conftest import ROOT, Project
from ..hostile import as_frame, hostile_records
from .conftest import as_served

pytestmark = pytest.mark.slow


def test_schemathesis_finds_no_server_error_and_no_schema_violation(api: str) -> None:
    schemathesis = Path(sys.executable).parent / "schemathesis"
    done = subprocess.run(
        [
            str(schemathesis),
            "run",
            f"{api}/docs.json",
            "--checks",
            "all",
            "--max-examples",
            "150",
            "--seed",
            "20261125",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.service.schemathesis_hooks"},
        cwd=ROOT,
    )
    summary = "\n".join(line[:600] for line in done.stdout.splitlines())[-6000:]  # keeps the reproducing curl
    assert done.returncode == 0, summary
    assert " passed" in done.stdout


@settings(max_examples=int(os.environ.get("TIFFIN_FUZZ_EXAMPLES", "120")), deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))  # fmt: skip
@given(data=st.data())
def test_hostile_records_get_a_named_400_or_the_pipelines_own_prediction(
    data: st.DataObject, api: str, bike_spec: DatasetSpec, served_pipeline, bike_example: dict, served_history
) -> None:
    """Records generated from the spec (every field type x boundaries, overflow, wrong types, nesting, unicode,
    unknown and missing fields), sent as JSON to the real server: never a 5xx; a 400 names field and rule of
    every problem; a 200 is the pipeline's prediction of the canonical records."""
    records = data.draw(hostile_records(bike_spec, bike_example))
    body = json.dumps({"rows": records})  # NaN and Infinity as Python writes them: a client may do the same
    answer = httpx.post(f"{api}/predict", content=body, headers={"content-type": "application/json"}, timeout=60)
    assert answer.status_code in (200, 400), answer.text[:500]
    if answer.status_code == 400:
        detail = answer.json()["detail"]
        assert detail and all(("field" in p and p["rule"]) or ("loc" in p and p["type"]) for p in detail)
        return
    valid = Contract(bike_spec).validate(as_frame(records), serving=True)
    assert valid.rejects.empty
    expected = served_pipeline.predict(as_served(served_history, valid.valid))
    np.testing.assert_allclose(answer.json()["predictions"], expected, rtol=0, atol=1e-9)


@pytest.fixture(scope="module")
def served_pipeline(reproduced_project: Project):
    return joblib.load(reproduced_project.path / "models/model.joblib")
