"""The fast path gives the sklearn pipeline's numbers (to 1e-9), including its hard cases."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import SMALL_BATCH_ROWS, CompiledForest, Scorer


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
        # Over SMALL_BATCH_ROWS rows the forest runs scikit-learn's own per-tree routine: the same bits.
        np.testing.assert_array_equal(forest.predict(rows), model.predict(rows))
        np.testing.assert_allclose(forest.predict(rows[:SMALL_BATCH_ROWS]), model.predict(rows[:SMALL_BATCH_ROWS]),
                                   rtol=0, atol=1e-9)  # fmt: skip
    # One row at a time: the API's usual request takes a path of its own.
    odd = hard_cases(matrix, seed=1)[:300]
    one_by_one = np.concatenate([forest.predict(row[None, :]) for row in odd])
    np.testing.assert_allclose(one_by_one, model.predict(odd), rtol=0, atol=1e-9)


def test_the_scorer_matches_the_pipeline_on_both_of_its_paths(bike_spec: DatasetSpec, canonical: pd.DataFrame) -> None:
    pipeline = build_pipeline(bike_spec, {"max_iter": 80}).fit(canonical, canonical["cnt"])
    scorer = Scorer(pipeline, bike_spec)
    frame = canonical[bike_spec.input_columns].head(500)
    records = frame.assign(dteday=frame["dteday"].dt.strftime("%Y-%m-%d")).to_dict("records")
    records = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in r.items()} for r in records]
    expected = pipeline.predict(canonical.head(500))
    small = [scorer.score(records[i : i + SMALL_BATCH_ROWS]).predictions for i in range(0, 500, SMALL_BATCH_ROWS)]
    np.testing.assert_allclose(np.concatenate(small), expected, rtol=0, atol=1e-9)
    one_by_one = [scorer.score([record]).predictions[0] for record in records[:100]]
    np.testing.assert_allclose(one_by_one, expected[:100], rtol=0, atol=1e-9)
    np.testing.assert_allclose(scorer.score(records).predictions, expected, rtol=0, atol=1e-9)
