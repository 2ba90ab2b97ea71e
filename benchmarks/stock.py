"""The stock pipeline a notebook would ship: ColumnTransformer + one-hot + HistGradientBoosting (300 trees)."""

from __future__ import annotations

import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import FunctionTransformer, OneHotEncoder

from tiffin.core.spec import DatasetSpec


def date_parts(frame: pd.DataFrame) -> pd.DataFrame:
    dates = pd.to_datetime(frame.iloc[:, 0])
    return pd.DataFrame({"year": dates.dt.year, "month": dates.dt.month, "dayofyear": dates.dt.dayofyear})


def stock_pipeline(spec: DatasetSpec) -> Pipeline:
    columns = ColumnTransformer(
        [
            ("categories", OneHotEncoder(handle_unknown="ignore"), spec.features.categorical),
            ("numbers", "passthrough", spec.features.numeric),
            ("dates", FunctionTransformer(date_parts), list(spec.features.date_parts)),
        ]
    )
    model = HistGradientBoostingRegressor(max_iter=300, early_stopping=False, loss="poisson", random_state=0)
    return Pipeline([("columns", columns), ("model", model)])
