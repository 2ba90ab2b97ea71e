"""Stage evaluate: the model against a naive baseline on the test period, overall, per slice and per series.

Writes DVC metrics (`eval/metrics.json`: test.mae, test.rmse, test.r2, baseline.test.mae), the slices in a file
of their own (`eval/slices.json`, so `dvc metrics show` stays readable with many segments), for a spec with
`series` one verdict per series (`eval/series.json`), and plot data (`eval/plots/`, see `dvc plots show`).
Fails if the model does not beat the baseline: overall, or with `must_beat_baseline: per_series` also on every
series with at least `min_series_rows` test rows.
"""

import joblib
import numpy as np
import pandas as pd

from tiffin.cli.stage import StageError, start
from tiffin.core.spec import DatasetSpec
from tiffin.modeling.evaluation import regression_metrics, series_verdicts, slice_table
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
    model_metrics = regression_metrics(actual, predicted)
    baseline_metrics = regression_metrics(actual, naive)
    metrics = {"test": model_metrics, "baseline": {"test": baseline_metrics}}
    if lag := spec.evaluation.history_baseline_lag:
        # The same hour `lag` before, per series (the group mean where that hour is missing): both are reported,
        # and the stronger is the one to beat, so the ratio stays honest for a model that reads history.
        seasonal = test[spec.target_lag(lag)].fillna(pd.Series(naive, index=test.index)).to_numpy("float64")
        metrics["history_baseline"] = {"lag": lag, "test": regression_metrics(actual, seasonal)}
        if metrics["history_baseline"]["test"]["mae"] < baseline_metrics["mae"]:
            naive, baseline_metrics = seasonal, metrics["history_baseline"]["test"]
    metrics["mae_vs_baseline"] = round(model_metrics["mae"] / baseline_metrics["mae"], 4)
    write_json(metrics, paths.METRICS)
    slices = slice_table(test, actual, predicted, naive, spec.slices)
    write_json(
        {
            title: {
                row.segment: {"rows": row.rows, "mae": row.mae, "baseline_mae": row.baseline_mae}
                for row in group.itertuples()
            }
            for title, group in slices.groupby("slice", sort=False)
        },
        paths.SLICE_METRICS,
    )
    write_plots(test, spec, actual, predicted, slices)
    log.info(
        "test MAE %.2f vs baseline %.2f (ratio %.3f)",
        model_metrics["mae"],
        baseline_metrics["mae"],
        model_metrics["mae"] / baseline_metrics["mae"],
    )
    rule = params.get("must_beat_baseline", True)
    if rule and model_metrics["mae"] >= baseline_metrics["mae"]:
        raise StageError(
            f"the model (MAE {model_metrics['mae']}) does not beat the naive baseline "
            f"(MAE {baseline_metrics['mae']}): it is not worth registering"
        )
    min_rows = int(params.get("min_series_rows", 50))
    judge_series(spec, test, actual, predicted, naive, rule == "per_series", min_rows, log)


def judge_series(spec: DatasetSpec, test: pd.DataFrame, actual: np.ndarray, predicted: np.ndarray, naive: np.ndarray,
                 binding: bool, min_rows: int, log) -> None:  # fmt: skip
    """One verdict per series (model vs baseline on its own rows), in eval/series.json (an empty list for a spec
    without series); binding: a loss fails the stage."""
    verdicts = series_verdicts(test, spec.series, actual, predicted, naive, min_rows)
    write_json({"min_series_rows": min_rows, "binding": binding, "series": verdicts.to_dict("records")},
               paths.SERIES_METRICS)  # fmt: skip
    if not spec.series:
        return
    losers = verdicts[verdicts["verdict"] == "loses"]
    log.info("per series (model vs naive baseline, test period):\n%s", verdicts.to_string(index=False))
    if binding and not losers.empty:
        named = ", ".join(f"{row.series} (MAE {row.mae} vs {row.baseline_mae})" for row in losers.itertuples())
        raise StageError(f"the model loses to the naive baseline on {len(losers)} of {len(verdicts)} series: {named}")
    if not losers.empty:
        log.warning("the model loses to the naive baseline on %d series (not binding: must_beat_baseline is not "
                    "per_series): %s", len(losers), ", ".join(losers["series"]))  # fmt: skip


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
