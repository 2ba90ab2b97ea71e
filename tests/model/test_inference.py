"""The fast path gives the sklearn pipeline's numbers, bit for bit, including its hard cases, at every size."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.forest import CompiledForest
from tiffin.serving.scorer import Scorer


@pytest.fixture(scope="module")
def canonical(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    return Contract(bike_spec).validate(bike_raw.sample(6000, random_state=3)).valid.reset_index(drop=True)


def hard_cases(matrix: np.ndarray, seed: int = 0) -> np.ndarray:
    """Missing values, codes the model never saw, and numbers far outside the training range."""
    rng = np.random.default_rng(seed)
    odd = matrix[rng.integers(0, len(matrix), 600)].copy()
    cells = rng.integers(0, odd.shape[1], (600, 3))
    for row, columns in enumerate(cells):
        for column in columns:
            odd[row, column] = rng.choice([np.nan, -1.0, 3.0, 6.0, 250.0, -40.0, 1e6])
    return odd


@pytest.mark.parametrize(
    "params",
    [
        {"max_iter": 120},
        {"max_iter": 60, "loss": "squared_error", "max_leaf_nodes": 63},
        {"max_iter": 40, "categorical_features": None},
    ],
    ids=["poisson", "squared-error-deep", "no-native-categories"],
)
def test_the_compiled_forest_equals_scikit_learn(bike_spec: DatasetSpec, canonical: pd.DataFrame, params) -> None:
    train = canonical[canonical["weathersit"] != "Heavy Rain"]  # a category the model never sees
    pipeline = build_pipeline(bike_spec, params).fit(train, train["cnt"])
    model = pipeline.named_steps["model"]
    matrix = pipeline.named_steps["features"].transform(canonical)
    forest = CompiledForest(model)
    for rows in (matrix, hard_cases(matrix)):
        np.testing.assert_array_equal(forest.predict(rows), model.predict(rows))
        np.testing.assert_array_equal(forest.predict(rows[:20]), model.predict(rows[:20]))
    # One row at a time, the API's usual request; and a matrix in Fortran order (a slice of columns, say).
    odd = hard_cases(matrix, seed=1)[:300]
    np.testing.assert_array_equal(np.concatenate([forest.predict(row[None, :]) for row in odd]), model.predict(odd))
    np.testing.assert_array_equal(forest.predict(np.asfortranarray(odd)), model.predict(odd))


def test_the_scorer_matches_the_pipeline_on_both_of_its_paths(bike_spec: DatasetSpec, canonical: pd.DataFrame) -> None:
    pipeline = build_pipeline(bike_spec, {"max_iter": 80}).fit(canonical, canonical["cnt"])
    scorer = Scorer(pipeline, bike_spec)
    frame = canonical[bike_spec.input_columns].head(500)
    records = frame.assign(dteday=frame["dteday"].dt.strftime("%Y-%m-%d")).to_dict("records")
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in records]
    expected = pipeline.predict(canonical.head(500))
    small = [scorer.score(records[i : i + 20]).predictions for i in range(0, 500, 20)]
    np.testing.assert_array_equal(np.concatenate(small), expected)
    one_by_one = [scorer.score([record]).predictions[0] for record in records[:100]]
    np.testing.assert_array_equal(one_by_one, expected[:100])
    np.testing.assert_array_equal(scorer.score(records).predictions, expected)
