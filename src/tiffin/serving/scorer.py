"""Scoring fast enough for a real-time API, with the exact numbers of the sklearn pipeline.

Two costs dominate a prediction with a stock pipeline: pandas (the DataFrame and the column transforms, ~9 ms a
call) and HistGradientBoosting's predict, which calls each of its trees from Python. The fast path skips both:
records are checked and encoded without pandas (`RecordValidator`, then the same `FeatureEncoder` on plain
columns), and the trees are walked by one compiled loop (`CompiledForest`): the same bits as the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline

from tiffin.core.contract import RecordValidator
from tiffin.core.spec import DatasetSpec
from tiffin.features import FeatureEncoder
from tiffin.features.online import OnlineHistory
from tiffin.serving.forest import CompiledForest
from tiffin.storage.modelstore import LoadedModel


@dataclass
class Scored:
    predictions: list[float]
    problems: list[dict]
    columns: dict | None = None  # the records in canonical form, column by column (for the prediction log)
    stale: int = 0  # rows answered with null history features (their series' history is stale or missing)


class Scorer:
    """Validate, encode and predict records with one registered pipeline."""

    def __init__(self, pipeline: Pipeline, spec: DatasetSpec, history: OnlineHistory | None = None) -> None:
        """`history`: where a request's history features are looked up (a spec with `history`; the batch runner
        attaches them from the feature table instead)."""
        self.pipeline = pipeline
        self.spec = spec
        self.history = history
        self.validator = RecordValidator(spec)
        self.encoder: FeatureEncoder = pipeline.named_steps["features"]
        self.model = pipeline.named_steps["model"]
        self.forest = CompiledForest(self.model) if isinstance(self.model, HistGradientBoostingRegressor) else None

    @classmethod
    def from_model(cls, model: LoadedModel, history: OnlineHistory | None = None) -> Scorer:
        """The one way from a stored model to a scorer (API, batch, Spark and the simulation)."""
        return cls(model.pipeline, model.spec, history)

    def predict_matrix(self, matrix: np.ndarray) -> np.ndarray:
        if self.forest is not None:
            return self.forest.predict(matrix)
        return self.model.predict(matrix)

    def predict(self, columns: object) -> np.ndarray:
        """Canonical rows (a DataFrame or validated columns) -> predictions."""
        return self.predict_matrix(self.encoder.transform(columns))

    def predict_logged(self, canonical: pd.DataFrame) -> np.ndarray:
        """Rows of the prediction log, scored by a model in shadow: with the history features this model's own
        lookup gives (stale ones null), whatever features the answering model looked up."""
        if self.history is not None:
            canonical = canonical.assign(**self.history.lookup(canonical).nulled())
        return self.predict(canonical)

    def score(self, records: list[dict]) -> Scored:
        """All-or-nothing: predictions for every record, or the problems of every bad one."""
        columns, problems = self.validator.validate(records)
        if problems:
            return Scored([], problems)
        stale = 0
        if self.history is not None:
            found = self.history.lookup(columns)
            if found.stale.any():
                if self.spec.history.when_stale == "refuse":
                    return Scored([], self._stale_problems(columns, found.stale))
                stale = int(found.stale.sum())
            columns = {**columns, **found.nulled()}  # stale history is no history: declared, counted
        return Scored(self.predict(columns).tolist(), [], columns, stale)

    def _stale_problems(self, columns: dict, stale: np.ndarray) -> list[dict]:
        history = self.spec.history
        field = "+".join(self.spec.series) or self.spec.timestamp.column
        made = f"the prediction is made ({history.horizon} ahead)"
        rule = f"history stale: no value of this series known in the {history.stale_after} before {made}"
        series = [columns[name] for name in self.spec.series]

        def value(row: int) -> str:
            return "+".join(str(values[row]) for values in series) or "(the series)"

        return [{"row": int(row), "field": field, "value": value(row), "rule": rule} for row in np.flatnonzero(stale)]
