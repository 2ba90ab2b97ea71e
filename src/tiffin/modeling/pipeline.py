"""Building the model from the spec and params, and the naive baseline it has to beat."""

from __future__ import annotations

import importlib
import inspect
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, RegressorMixin
from sklearn.pipeline import Pipeline

from tiffin.core.spec import DatasetSpec
from tiffin.features import FeatureEncoder


def estimator_class(dotted: str) -> type:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)


def build_pipeline(spec: DatasetSpec, overrides: dict[str, Any] | None = None) -> Pipeline:
    """features -> estimator; the spec's estimator params, overridden by `params.yaml: train`."""
    features = FeatureEncoder.from_spec(spec)
    cls = estimator_class(spec.model.estimator)
    params = {**spec.model.params, **(overrides or {})}
    accepted = inspect.signature(cls).parameters
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        raise ValueError(f"{spec.model.estimator} has no parameter(s) {unknown}: check params.yaml `train`")
    if "categorical_features" in accepted and "categorical_features" not in params:
        params["categorical_features"] = features.categorical_indices() or None
    return Pipeline([("features", features), ("model", cls(**params))])


class GroupMeanBaseline(RegressorMixin, BaseEstimator):
    """Predicts the training mean of the target per group (e.g. hour x working day)."""

    def __init__(self, group_by: tuple[str, ...] = ()) -> None:
        self.group_by = group_by

    def fit(self, frame: pd.DataFrame, y: pd.Series) -> GroupMeanBaseline:
        target = pd.Series(np.asarray(y, dtype="float64"), index=frame.index, name="_y")
        self.global_mean_ = float(target.mean())
        self.means_ = target.groupby([frame[c] for c in self.group_by], dropna=False).mean()
        return self

    def predict(self, frame: pd.DataFrame) -> np.ndarray:
        columns = list(self.group_by)
        keys = pd.MultiIndex.from_frame(frame[columns]) if len(columns) > 1 else pd.Index(frame[columns[0]])
        return self.means_.reindex(keys).fillna(self.global_mean_).to_numpy(dtype="float64")
