"""Stage evaluate: the model against a naive baseline on the test period, overall and per slice.

Writes DVC metrics (`eval/metrics.json`: test.mae, test.rmse, test.r2, baseline.test.mae, slices)
and plot data (`eval/plots/`, see `dvc plots show`). Fails if the model does not beat the baseline.
"""

import joblib
import numpy as np
import pandas as pd

from tiffin.cli.stage import StageError, start
from tiffin.modeling.evaluation import regression_metrics, slice_table
from tiffin.modeling.pipeline import GroupMeanBaseline
from tiffin.storage import paths
from tiffin.storage.files import read_parquet, write_json


def main() -> None:
    spec, params, log = start("evaluate")
    train = read_parquet(paths.TRAIN)
    test = read_parquet(paths.TEST)
    pipeline = joblib.load(paths.MODEL)
    baseline = GroupMeanBaseline(tuple(spec.evaluation.baseline_group_by)).fit(train, train[spec.target])

    actual = test[spec.target].to_numpy(dtype="float64")
    predicted = pipeline.predict(test)
    naive = baseline.predict(test)
    slices = slice_table(test, actual, predicted, naive, spec.evaluation.slices)
    model_metrics = regression_metrics(actual, predicted)
    baseline_metrics = regression_metrics(actual, naive)
    write_json(
        {
            "test": model_metrics,
            "baseline": {"test": baseline_metrics},
            "mae_vs_baseline": round(model_metrics["mae"] / baseline_metrics["mae"], 4),
            "slices": {
                title: {
                    row.segment: {"rows": row.rows, "mae": row.mae, "baseline_mae": row.baseline_mae}
                    for row in group.itertuples()
                }
                for title, group in slices.groupby("slice", sort=False)
            },
        },
        paths.METRICS,
    )
    write_plots(test, spec, actual, predicted, slices)
    log.info(
        "test MAE %.2f vs baseline %.2f (ratio %.3f)",
        model_metrics["mae"],
        baseline_metrics["mae"],
        model_metrics["mae"] / baseline_metrics["mae"],
    )
    if params.get("must_beat_baseline", True) and model_metrics["mae"] >= baseline_metrics["mae"]:
        raise StageError(
            f"the model (MAE {model_metrics['mae']}) does not beat the naive baseline "
            f"(MAE {baseline_metrics['mae']}): it is not worth registering"
        )


def write_plots(test: pd.DataFrame, spec, actual: np.ndarray, predicted: np.ndarray, slices: pd.DataFrame) -> None:
    """Plot data as CSV; dvc.yaml says how to draw it."""
    paths.PLOTS.mkdir(parents=True, exist_ok=True)
    hour = spec.event_time(test).dt.hour.to_numpy()
    pd.DataFrame({"actual": actual, "predicted": predicted.round(3), "hour": hour}).to_csv(
        paths.PLOTS / "predictions.csv", index=False
    )
    by_hour = pd.DataFrame({"hour": hour, "error": np.abs(actual - predicted)}).groupby("hour", as_index=False)
    by_hour = by_hour["error"].mean().round(3).rename(columns={"error": "mae"})
    by_hour.to_csv(paths.PLOTS / "error_by_hour.csv", index=False)
    slices.assign(segment=slices["slice"] + ": " + slices["segment"])[["segment", "mae", "baseline_mae"]].to_csv(
        paths.PLOTS / "slices.csv", index=False
    )


if __name__ == "__main__":
    main()
