"""The feature code: one transformer, used at training, in the API and in batch.

It is stateless by design. Categories come from the contract's closed sets, not from the training
data, so a category unseen in training still maps to a stable code, and nothing is learned here
that could drift between training and serving. Output is a float64 matrix; missing or unknown
categories become NaN, which HistGradientBoosting treats as "missing".
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin

from tiffin.spec import DatasetSpec

_DATE_PARTS = {
    "year": lambda d: d.dt.year,
    "month": lambda d: d.dt.month,
    "day": lambda d: d.dt.day,
    "dayofweek": lambda d: d.dt.dayofweek,
    "dayofyear": lambda d: d.dt.dayofyear,
    "hour": lambda d: d.dt.hour,
}


class FeatureEncoder(TransformerMixin, BaseEstimator):
    """Canonical rows (the contract's output) -> the model's numeric matrix."""

    def __init__(
        self,
        numeric: tuple[str, ...] = (),
        categorical: dict[str, list[str]] | None = None,
        date_parts: dict[str, list[str]] | None = None,
    ) -> None:
        self.numeric = numeric
        self.categorical = categorical
        self.date_parts = date_parts

    @classmethod
    def from_spec(cls, spec: DatasetSpec) -> FeatureEncoder:
        categorical = {name: list(spec.columns[name].values or []) for name in spec.features.categorical}
        return cls(tuple(spec.features.numeric), categorical, dict(spec.features.date_parts))

    def fit(self, frame: pd.DataFrame, y: Any = None) -> FeatureEncoder:
        self.n_features_out_ = len(self.get_feature_names_out())
        return self

    def transform(self, frame: pd.DataFrame) -> np.ndarray:
        blocks = [frame[name].to_numpy(dtype="float64", na_value=np.nan) for name in self.numeric]
        for name, values in (self.categorical or {}).items():
            codes = pd.Categorical(frame[name], categories=values).codes.astype("float64")
            codes[codes < 0] = np.nan
            blocks.append(codes)
        for name, parts in (self.date_parts or {}).items():
            dates = pd.to_datetime(frame[name])
            blocks.extend(_DATE_PARTS[part](dates).to_numpy(dtype="float64", na_value=np.nan) for part in parts)
        return np.column_stack(blocks) if blocks else np.empty((len(frame), 0))

    def get_feature_names_out(self, input_features: Any = None) -> np.ndarray:
        names = [*self.numeric, *(self.categorical or {})]
        names += [f"{name}_{part}" for name, parts in (self.date_parts or {}).items() for part in parts]
        return np.asarray(names, dtype=object)

    def categorical_indices(self) -> list[int]:
        """Columns of the output that hold category codes (for HistGradientBoosting)."""
        start = len(self.numeric)
        return list(range(start, start + len(self.categorical or {})))
