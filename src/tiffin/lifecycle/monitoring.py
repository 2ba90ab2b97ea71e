"""Monitoring a model in production: input drift, prediction drift and, once actuals arrive, its error.

Drift is the Population Stability Index (PSI, `drift`) of each feature between the model's reference
(`drift_reference`: its training rows, or those rows following the calendar, by `monitor.reference`) and
the logged inputs of a time window, judged at each feature's calibrated threshold (`calibration`) or,
for an uncalibrated model, at `monitor.feature_psi`. Prediction drift is the PSI of the logged
predictions against the model's own predictions on its reference rows. Where the target has arrived in the
source table, logged predictions are joined to it by `row_key` and scored per model and role (champion vs challenger)
and per evaluation slice. `run` writes the dashboard, metrics.json and a Prometheus text file.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.engine import Engine

from tiffin.core import exitcodes
from tiffin.core.contract import Contract
from tiffin.core.params import Monitor as Thresholds
from tiffin.core.spec import DatasetSpec
from tiffin.features import logged as prediction_log
from tiffin.lifecycle import drift_reference
from tiffin.lifecycle.calibration import Calibration
from tiffin.lifecycle.drift import drift_table, numeric_psi
from tiffin.modeling.evaluation import regression_metrics, segments
from tiffin.storage import predlog
from tiffin.storage.database import read_window
from tiffin.storage.modelstore import LoadedModel

EXIT_CROSSED = exitcodes.ALARM

# -- thresholds --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdCheck:
    name: str
    value: float | None
    threshold: float
    crossed: bool
    note: str = ""


# -- the window's log and actuals -------------------------------------------------------------


def read_log(engine: Engine, spec: DatasetSpec, start: str, end: str) -> pd.DataFrame:
    """The prediction log of [start, end] with its inputs in canonical form (as the contract reads them)."""
    logged = prediction_log.read(engine, spec, start, end)
    if logged.empty:
        return logged
    canonical, _ = Contract(spec).normalise(logged[spec.input_columns], spec.input_columns)
    return pd.concat([logged.drop(columns=spec.input_columns), canonical.reset_index(drop=True)], axis=1)


# -- performance -------------------------------------------------------------------------------


def actuals(engine: Engine, spec: DatasetSpec, start: str, end: str) -> pd.DataFrame:
    """The target per row_key for the source rows of the window that have it (and pass the contract)."""

    contract, frames = Contract(spec), []
    try:  # whole days: the window column may be a date; rows are matched to the log by key anyway
        for raw in read_window(engine, spec, start[:10], end[:10]):
            valid = contract.validate(raw).valid  # a row whose target has not arrived is rejected here
            frames.append(pd.DataFrame({"row_key": predlog.row_keys(spec, valid), "actual": valid[spec.target]}))
    except LookupError:  # no source table yet: nothing has arrived
        pass
    if not frames:
        return pd.DataFrame({"row_key": pd.Series(dtype=object), "actual": pd.Series(dtype="float64")})
    return pd.concat(frames, ignore_index=True).drop_duplicates("row_key").astype({"actual": "float64"})


@dataclass(frozen=True)
class Performance:
    """Errors on the logged rows whose actuals have arrived; each (model, role, row) counted once."""

    scored: pd.DataFrame  # the log rows joined to their actuals
    by_model: pd.DataFrame  # model, role, rows, mae, rmse, r2
    by_slice: pd.DataFrame  # model, role, slice, segment, rows, mae, rmse
    daily: pd.DataFrame  # model, role, day, rows, mae

    def of(self, model: str) -> dict[str, Any] | None:
        rows = self.by_model[self.by_model["model"] == model]
        return None if rows.empty else rows.iloc[0].to_dict()


def _metrics(frame: pd.DataFrame) -> dict[str, Any]:
    return regression_metrics(frame["actual"].to_numpy(), frame["prediction"].to_numpy())


def _grouped(scored: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    records = [{**dict(zip(by, key, strict=True)), **_metrics(rows)} for key, rows in scored.groupby(by, sort=True)]
    return pd.DataFrame.from_records(records, columns=[*by, "rows", "mae", "rmse", "r2"])


def performance(logged: pd.DataFrame, truth: pd.DataFrame, spec: DatasetSpec) -> Performance | None:
    """MAE/RMSE overall per (model, role), per slice and per day; None when no actual has arrived."""
    scored = logged.drop_duplicates(["model", "role", "row_key"], keep="last").merge(truth, on="row_key")
    if scored.empty:
        return None
    scored = scored.assign(day=pd.to_datetime(scored["event_time"]).dt.normalize())
    sliced = [
        _grouped(scored.assign(slice=s.title, segment=segments(scored, s)), ["model", "role", "slice", "segment"])
        for s in spec.slices
        if s.column in scored.columns
    ]
    return Performance(
        scored=scored,
        by_model=_grouped(scored, ["model", "role"]),
        by_slice=pd.concat(sliced, ignore_index=True) if sliced else pd.DataFrame(),
        daily=_grouped(scored, ["model", "role", "day"]),
    )


def head_to_head(scored: pd.DataFrame) -> dict[str, Any] | None:
    """Champion vs challenger on the rows both predicted: is the new model better in production?"""
    roles = {role: scored[scored["role"] == role] for role in (predlog.CHAMPION, predlog.CHALLENGER)}
    if any(frame.empty for frame in roles.values()):
        return None
    common = set(roles[predlog.CHAMPION]["row_key"]) & set(roles[predlog.CHALLENGER]["row_key"])
    if not common:
        return None
    result: dict[str, Any] = {"rows": len(common)}
    for role, frame in roles.items():
        shared = frame[frame["row_key"].isin(common)]
        result[role] = {"model": str(shared["model"].iloc[0]), "mae": _metrics(shared)["mae"]}
    champion, challenger = result[predlog.CHAMPION]["mae"], result[predlog.CHALLENGER]["mae"]
    result["better"] = predlog.CHALLENGER if challenger < champion else predlog.CHAMPION
    return result


def duel_line(duel: dict[str, Any]) -> str:
    champion, challenger = duel[predlog.CHAMPION], duel[predlog.CHALLENGER]
    return (
        f"on the {duel['rows']} rows both scored: challenger {challenger['model']} MAE {challenger['mae']} vs "
        f"champion {champion['model']} MAE {champion['mae']}: the {duel['better']} is better"
    )


# -- one window, judged ------------------------------------------------------------------------


@dataclass
class MonitorResult:
    """Everything one monitoring run found; `metrics` is what metrics.json holds."""

    model: str
    start: str
    end: str
    thresholds: Thresholds
    rows_logged: int
    drift: pd.DataFrame
    prediction_psi: float | None
    performance: Performance | None
    test_mae: float | None
    checks: list[ThresholdCheck] = field(default_factory=list)
    reference_predictions: np.ndarray = field(default_factory=lambda: np.array([]))
    window_predictions: np.ndarray = field(default_factory=lambda: np.array([]))
    target_label: str = "target"  # the spec's description of its target, for charts
    folder: Path | None = None  # where monitor_report.write put it
    prediction_threshold: float = 0.2  # calibrated, else monitor.prediction_psi
    reference_note: str = ""  # which reference the window was compared with
    calibration_note: str = ""  # whose thresholds judged it

    @property
    def crossed(self) -> list[str]:
        return [check.name for check in self.checks if check.crossed]

    @property
    def exit_code(self) -> int:
        return EXIT_CROSSED if self.crossed else 0

    @property
    def drifted_features(self) -> list[str]:
        return self.drift.loc[self.drift["drifted"], "feature"].tolist()

    @property
    def overall(self) -> dict[str, Any] | None:
        """The monitored model's production metrics (rows, mae, rmse, r2), if actuals arrived."""
        return self.performance.of(self.model) if self.performance else None

    @property
    def mae(self) -> float | None:
        return self.overall["mae"] if self.overall else None

    @property
    def mae_by_model(self) -> dict[str, float]:
        """Production MAE per logged model tag (champion and challenger alike)."""
        if self.performance is None:
            return {}
        return dict(zip(self.performance.by_model["model"], self.performance.by_model["mae"], strict=True))

    @property
    def dashboard(self) -> Path | None:
        return self.folder / "index.html" if self.folder else None


def _judge(result: MonitorResult) -> list[ThresholdCheck]:
    t, rows = result.thresholds, result.rows_logged
    few = f"only {rows} logged rows (min_rows {t.min_rows}): not judged" if rows < t.min_rows else ""
    drifted, pred = len(result.drifted_features), result.prediction_psi
    too_many = not few and drifted > t.max_drifted_features
    shifted = bool(not few and pred is not None and pred >= result.prediction_threshold)
    return [
        ThresholdCheck("drifted_features", drifted, t.max_drifted_features, too_many,
                       few or f"{drifted} features flagged (PSI or a feed check over its limit)"),
        ThresholdCheck("prediction_psi", pred, result.prediction_threshold, shifted,
                       few or ("" if pred is not None else "no logged predictions of this model")),
        _mae_check(result),
        _feed_check(result, few),
    ]  # fmt: skip


def _feed_check(result: MonitorResult, few: str) -> ThresholdCheck:
    """A feed fault (values beyond the reference's tails or off its grid, a field moving alone, a label that
    contradicts the others, a stuck value) is one feature's own: it alarms alone, where drift waits for more
    than `max_drifted_features`."""
    signals = result.drift["signals"].fillna("").str.split(", ")
    faulty = [name for name, found in zip(result.drift["feature"], signals, strict=True) if set(found) - {"psi", ""}]
    note = few or (
        f"feed checks over their calibrated limits: {', '.join(faulty)}"
        if faulty
        else "feed checks within their calibrated limits (not judged without a calibration)"
    )
    return ThresholdCheck("feed_faults", len(faulty), 0, bool(faulty and not few), note)  # fmt: skip


def _mae_check(result: MonitorResult) -> ThresholdCheck:
    t, overall = result.thresholds, result.overall
    if overall is None:
        return ThresholdCheck("mae_ratio", None, t.max_mae_ratio, False, "no actuals in the window yet")
    if not result.test_mae:
        return ThresholdCheck("mae_ratio", None, t.max_mae_ratio, False, "the model's metadata has no test MAE")
    ratio = round(overall["mae"] / result.test_mae, 4)
    if overall["rows"] < t.min_rows:
        return ThresholdCheck(
            "mae_ratio", ratio, t.max_mae_ratio, False, f"only {overall['rows']} rows with actuals: not judged"
        )
    note = f"production MAE {overall['mae']} vs test MAE {result.test_mae}"
    return ThresholdCheck("mae_ratio", ratio, t.max_mae_ratio, ratio > t.max_mae_ratio, note)


def _monitored_rows(logged: pd.DataFrame, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(inputs: one row per request, as the champion saw it; predictions: those of the monitored model)."""
    inputs = logged[logged["role"] == predlog.CHAMPION] if (logged["role"] == predlog.CHAMPION).any() else logged
    if "row_key" in inputs:  # a row scored twice (the API, then the batch; a re-run) is one row of the feed
        inputs = inputs.drop_duplicates("row_key", keep="last")
    return inputs, logged[logged["model"] == model]


def calibration_for(
    calibration: Calibration | None, settings: Thresholds, start: str, end: str, model: str
) -> tuple[Calibration | None, str]:
    """The calibration that may judge this window, and what the report says of it."""
    if calibration is None:
        return None, f"not calibrated (`tiffin monitor calibrate`): every feature at PSI {settings.feature_psi}"
    if calibration.model != model:
        return None, (f"the thresholds are {calibration.model}'s, not {model}'s: every feature at PSI "
                      f"{settings.feature_psi}; run `tiffin monitor calibrate --model {model}`")  # fmt: skip
    if not calibration.fits(settings):
        return None, (f"the model's calibration ({calibration.reference}, {calibration.window_days}-day windows, "
                      f"{calibration.alarms_per_quarter} alarms per quarter) is not for these settings "
                      f"({settings.reference}, {settings.window_days}, {settings.alarms_per_quarter}): "
                      f"every feature at PSI {settings.feature_psi}; run `tiffin monitor calibrate`")  # fmt: skip
    note = (f"thresholds calibrated on {calibration.windows} training windows of {calibration.window_days} days "
            f"for {calibration.alarms_per_quarter} false alarm(s) per feature per quarter")  # fmt: skip
    days = (pd.Timestamp(end) - pd.Timestamp(start)).days + 1
    if not 0.5 <= days / calibration.window_days <= 2:
        note += f"; this window is {days} days, so its false-alarm rate differs"
    return calibration, note


def judge_window(
    reference: pd.DataFrame,
    logged: pd.DataFrame,
    truth: pd.DataFrame,
    spec: DatasetSpec,
    *,
    model: str,
    start: str,
    end: str,
    thresholds: Thresholds,
    test_mae: float | None = None,
    calibration: Calibration | None = None,
) -> MonitorResult:
    """Judge one window: reference rows (with `prediction`), log rows (`features.logged.read`), actuals; at
    the calibrated thresholds where `calibration` fits the settings."""
    inputs, predicted = _monitored_rows(logged, model)
    window_predictions = predicted["prediction"].to_numpy(dtype="float64")
    against = drift_reference.build(reference, inputs, spec, thresholds.reference, thresholds.min_rows)
    calibration, calibration_note = calibration_for(calibration, thresholds, start, end, model)
    result = MonitorResult(
        model=model, start=start, end=end, thresholds=thresholds, rows_logged=len(inputs),
        drift=drift_table(against.rows, inputs, spec, thresholds.feature_psi, against.weights,
                          calibration.limits if calibration else None),
        prediction_psi=round(numeric_psi(against.rows["prediction"], pd.Series(window_predictions),
                                         against.weights), 4) if len(window_predictions) else None,
        performance=performance(logged, truth, spec), test_mae=test_mae,
        reference_predictions=against.used["prediction"].to_numpy(dtype="float64"),
        window_predictions=window_predictions, target_label=spec.target_label,
        prediction_threshold=calibration.prediction["threshold"] if calibration else thresholds.prediction_psi,
        reference_note=against.note, calibration_note=calibration_note,
    )  # fmt: skip
    result.checks = _judge(result)
    return result


def monitor(
    engine: Engine, model: LoadedModel, start: str, end: str, thresholds: Thresholds | None = None
) -> MonitorResult:
    """Judge `model` over the logged predictions of [start, end] against its reference and the actuals."""
    spec = model.spec
    test_mae = model.metadata.get("metrics", {}).get("test", {}).get("mae")
    return judge_window(
        model.reference(), read_log(engine, spec, start, end), actuals(engine, spec, start, end), spec,
        model=model.tag, start=start, end=end, thresholds=thresholds or Thresholds(), test_mae=test_mae,
        calibration=Calibration.load(model.calibration_file),
    )  # fmt: skip
