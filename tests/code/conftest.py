"""Fixtures of the code tier."""

import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import Scorer


@pytest.fixture(scope="session")
def scorer(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> Scorer:
    """A quick model of the example (30 trees), for the batch runner's tests."""
    train = Contract(bike_spec).validate(bike_raw.head(4000)).valid
    return Scorer(build_pipeline(bike_spec, {"max_iter": 30}).fit(train, train["cnt"]), bike_spec)
