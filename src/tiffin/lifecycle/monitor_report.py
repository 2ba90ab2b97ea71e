"""The monitoring dashboard: one self-contained HTML page (charts as inline PNG, no CDN, no network).

Charts are matplotlib figures drawn without pyplot (no global state, safe in any thread). A small
script counts the charts the browser actually decoded into `body[data-charts-rendered]`, beside the
number the page meant to show (`data-charts-total`), so a headless browser can check the page.
"""

from __future__ import annotations

import base64
import html
import io
import json
import shutil
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sqlalchemy.engine import Engine

from tiffin.lifecycle.monitoring import MonitorResult, Thresholds, duel_line, head_to_head, monitor
from tiffin.storage.clock import iso_now
from tiffin.storage.modelstore import LoadedModel

LATEST = "latest"

DRIFT, OK_COLOUR, REFERENCE = "#c0392b", "#2e86c1", "#7f8c8d"

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2rem auto; max-width: 1100px; color: #222; }
.verdict { padding: .8rem 1rem; border-radius: 6px; font-weight: 600; }
.verdict.ok { background: #e8f6ee; border: 1px solid #27ae60; }
.verdict.crossed { background: #fdecea; border: 1px solid #c0392b; }
table { border-collapse: collapse; margin: .5rem 0 1.5rem; font-size: .9rem; }
th, td { padding: .25rem .6rem; border-bottom: 1px solid #ddd; text-align: left; }
img.chart { max-width: 100%; display: block; }
figure { margin: 1rem 0; }
.note { color: #666; }
"""

# Counts the charts that really rendered (decoded with a width), for people and headless browsers.
_SCRIPT = """
window.addEventListener("load", function () {
  var charts = Array.prototype.slice.call(document.querySelectorAll("img.chart"));
  var rendered = charts.filter(function (img) { return img.complete && img.naturalWidth > 0; }).length;
  document.body.dataset.chartsRendered = String(rendered);
  var total = document.body.dataset.chartsTotal;
  document.getElementById("charts-status").textContent = rendered + " of " + total + " charts rendered";
});
"""


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _chart(figure: Figure, caption: str) -> str:
    return (
        f'<figure><img class="chart" alt="{html.escape(caption)}" src="data:image/png;base64,{_png(figure)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


def psi_chart(drift: pd.DataFrame) -> Figure:
    """PSI per feature, each with its own threshold (calibrated, or the one of the params)."""
    figure = Figure(figsize=(8, 0.35 * len(drift) + 1.2))
    axes = figure.subplots()
    colours = [DRIFT if drifted else OK_COLOUR for drifted in drift["drifted"]]
    axes.barh(drift["feature"], drift["psi"], color=colours)
    axes.scatter(drift["threshold"], drift["feature"], marker="|", s=300, color="black", label="threshold")
    axes.invert_yaxis()
    axes.set_xscale("symlog", linthresh=1)
    axes.set_xlabel("PSI against the reference (symmetric log scale)")
    axes.legend(loc="lower right")
    return figure


def prediction_chart(reference: np.ndarray, window: np.ndarray) -> Figure:
    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    bins = np.histogram_bin_edges(np.concatenate([reference, window]), bins=40)
    axes.hist(reference, bins=bins, density=True, alpha=0.5, color=REFERENCE, label=f"reference ({len(reference)})")
    axes.hist(window, bins=bins, density=True, alpha=0.5, color=OK_COLOUR, label=f"window ({len(window)})")
    axes.set_xlabel("prediction")
    axes.set_ylabel("density")
    axes.legend()
    return figure


def _series_name(model: str, role: str) -> str:
    return f"{role}: {model}"


def daily_mae_chart(daily: pd.DataFrame) -> Figure:
    figure = Figure(figsize=(8, 3.5))
    axes = figure.subplots()
    for (model, role), rows in daily.groupby(["model", "role"]):
        axes.plot(pd.to_datetime(rows["day"]), rows["mae"], marker="o", label=_series_name(model, role))
    axes.set_ylabel("MAE per day")
    axes.legend()
    figure.autofmt_xdate()
    return figure


def slice_mae_chart(by_slice: pd.DataFrame) -> Figure:
    labels = (by_slice["slice"] + ": " + by_slice["segment"]).unique()
    models = by_slice[["model", "role"]].drop_duplicates().to_records(index=False)
    figure = Figure(figsize=(8, 0.3 * len(labels) * max(len(models), 1) + 1.5))
    axes = figure.subplots()
    height = 0.8 / max(len(models), 1)
    positions = np.arange(len(labels))
    for offset, (model, role) in enumerate(models):
        rows = by_slice[(by_slice["model"] == model) & (by_slice["role"] == role)]
        values = pd.Series(rows["mae"].to_numpy(), index=rows["slice"] + ": " + rows["segment"]).reindex(labels)
        axes.barh(positions + offset * height, values.to_numpy(), height=height, label=_series_name(model, role))
    axes.set_yticks(positions + height * (len(models) - 1) / 2, labels)
    axes.invert_yaxis()
    axes.set_xlabel("MAE")
    axes.legend(loc="lower right")
    return figure


def actual_chart(scored: pd.DataFrame, label: str) -> Figure:
    figure = Figure(figsize=(10, 3.5))
    axes = figure.subplots()
    truth = scored.drop_duplicates("row_key").sort_values("event_time")
    axes.plot(truth["event_time"], truth["actual"], color="black", linewidth=1.2, label="actual")
    for (model, role), rows in scored.groupby(["model", "role"]):
        rows = rows.sort_values("event_time")
        axes.plot(rows["event_time"], rows["prediction"], linewidth=0.9, alpha=0.8, label=_series_name(model, role))
    axes.set_ylabel(label)
    axes.legend()
    figure.autofmt_xdate()
    return figure


def _table(frame: pd.DataFrame) -> str:
    return frame.to_html(index=False, border=0, na_rep="", float_format=lambda v: f"{v:.4g}")


def _verdict(result: MonitorResult) -> str:
    crossed = [c for c in result.checks if c.crossed]
    if not crossed:
        return '<p class="verdict ok">OK: no threshold crossed</p>'
    items = ", ".join(f"{html.escape(c.name)} ({c.value} vs {c.threshold})" for c in crossed)
    return f'<p class="verdict crossed">Threshold crossed: {items}</p>'


def _performance_section(result: MonitorResult) -> tuple[list[str], list[str]]:
    """(charts, other HTML) about production error; a note when no actual has arrived yet."""
    perf = result.performance
    if perf is None:
        return [], ['<p class="note">No actuals have arrived for this window yet: error is not measured.</p>']
    charts = [_chart(daily_mae_chart(perf.daily), "MAE per day, per model")]
    if not perf.by_slice.empty:
        charts.append(_chart(slice_mae_chart(perf.by_slice), "MAE per slice, per model"))
    charts.append(_chart(actual_chart(perf.scored, result.target_label), "Actual vs predicted over time"))
    parts = ["<h3>Per model</h3>", _table(perf.by_model)]
    if duel := head_to_head(perf.scored):
        parts.append(f'<p class="duel">{html.escape(duel_line(duel))}</p>')
    if not perf.by_slice.empty:
        pivot = perf.by_slice.pivot_table(index=["slice", "segment"], columns=["role", "model"], values="mae")
        parts += ["<h3>MAE per slice</h3>", pivot.to_html(border=0, float_format=lambda v: f"{v:.4g}")]
    return charts, parts


def render(result: MonitorResult) -> str:
    """The whole page for one monitoring run."""
    charts = [_chart(psi_chart(result.drift), "Input drift: PSI per feature, and its threshold")]
    if len(result.window_predictions):
        charts.append(_chart(prediction_chart(result.reference_predictions, result.window_predictions),
                             "Prediction distribution: the reference vs this window"))  # fmt: skip
    performance_charts, performance_parts = _performance_section(result)
    checks = pd.DataFrame([vars(c) for c in result.checks])
    title = f"Monitoring {result.model}: {result.start} to {result.end}"
    body = [
        f"<h1>{html.escape(title)}</h1>",
        _verdict(result),
        f'<p class="note">{result.rows_logged} logged rows; compared with {html.escape(result.reference_note)}; '
        f'{html.escape(result.calibration_note)}; PSI binned at the reference deciles; '
        f'<span id="charts-status"></span></p>',
        "<h2>Checks</h2>", _table(checks),
        "<h2>Drift</h2>", charts[0], *charts[1:],
        _table(result.drift), f"<p>Prediction PSI: {result.prediction_psi}</p>",
        "<h2>Production error</h2>", *performance_charts, *performance_parts,
    ]  # fmt: skip
    total = len(charts) + len(performance_charts)
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{_STYLE}</style></head>\n"
        f'<body data-charts-total="{total}" data-charts-rendered="0">\n'
        + "\n".join(body)
        + f"\n<script>{_SCRIPT}</script>\n</body></html>\n"
    )


# -- the files -----------------------------------------------------------------------------------


def _records(frame: pd.DataFrame | None) -> list[dict[str, Any]]:
    if frame is None or frame.empty:
        return []
    return json.loads(frame.to_json(orient="records", date_format="iso"))


def metrics_document(result: MonitorResult) -> dict[str, Any]:
    perf = result.performance
    return {
        "model": result.model,
        "window": {"start": result.start, "end": result.end},
        "generated_at": iso_now(),
        "thresholds": result.thresholds.model_dump(),
        "rows": {"logged": result.rows_logged, "with_actuals": int(result.overall["rows"]) if result.overall else 0},
        "drift": {
            "reference": result.reference_note,
            "calibration": result.calibration_note,
            "features": _records(result.drift),
            "drifted": result.drifted_features,
            "prediction_psi": result.prediction_psi,
            "prediction_threshold": result.prediction_threshold,
        },
        "performance": {
            "overall": result.overall,
            "test_mae": result.test_mae,
            "by_model": _records(perf.by_model if perf else None),
            "by_slice": _records(perf.by_slice if perf else None),
            "head_to_head": head_to_head(perf.scored) if perf else None,
            "note": "" if perf else "no actuals have arrived for this window yet",
        },
        "checks": [asdict(check) for check in result.checks],
        "crossed": result.crossed,
    }


def write_prometheus(result: MonitorResult, path: Path) -> None:
    """The run's figures as gauges in Prometheus' text format (for node_exporter, or the service's /metrics)."""
    from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

    registry = CollectorRegistry()

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(f"tiffin_monitor_{name}", doc, labels, registry=registry)

    info = gauge("window_info", "The monitored model and window of the latest run", ("model", "start", "end"))
    info.labels(result.model, result.start, result.end).set(1)
    feature = gauge("feature_psi", "Population Stability Index of a feature against its reference", ("feature",))
    threshold = gauge("feature_psi_threshold", "The PSI at which a feature counts as drifted", ("feature",))
    for row in result.drift.itertuples():
        feature.labels(row.feature).set(row.psi)
        threshold.labels(row.feature).set(row.threshold)
    flagged = "Features flagged: PSI or a feed check (tails, residuals, off-grid values, label pairs, runs) over limit"
    gauge("drifted_features", flagged).set(len(result.drifted_features))
    if result.prediction_psi is not None:
        gauge("prediction_psi", "PSI of the predictions against the reference's").set(result.prediction_psi)
    gauge("logged_rows", "Logged rows in the window").set(result.rows_logged)
    if result.performance is not None:
        mae = gauge("mae", "Production mean absolute error", ("model", "role"))
        rmse = gauge("rmse", "Production root mean squared error", ("model", "role"))
        for row in result.performance.by_model.itertuples():
            mae.labels(row.model, row.role).set(row.mae)
            rmse.labels(row.model, row.role).set(row.rmse)
    crossed = gauge("threshold_crossed", "1 when the check's threshold is crossed", ("check",))
    for check in result.checks:
        crossed.labels(check.name).set(int(check.crossed))
    write_to_textfile(str(path), registry)


def window_folder(start: str, end: str) -> str:
    """`2012-06-01_2012-06-07`: the window as a folder name (no colons, for any file system)."""
    return f"{start}_{end}".replace(":", "").replace(" ", "T")


def write(result: MonitorResult, out_dir: Path) -> Path:
    """index.html, metrics.json and metrics.prom in out_dir/<start>_<end>/, then the same in out_dir/latest/."""
    folder = Path(out_dir) / window_folder(result.start, result.end)
    folder.mkdir(parents=True, exist_ok=True)
    result.folder = folder
    (folder / "metrics.json").write_text(
        json.dumps(metrics_document(result), indent=2, default=str) + "\n", encoding="utf-8"
    )
    write_prometheus(result, folder / "metrics.prom")
    (folder / "index.html").write_text(render(result), encoding="utf-8")
    _refresh_latest(folder, Path(out_dir) / LATEST)
    return folder


def _refresh_latest(folder: Path, latest: Path) -> None:
    """Copy beside, then swap by renames: a reader sees the old or the new run, never half of one."""
    staged = latest.with_name(f".{LATEST}-{uuid.uuid4().hex[:8]}")
    shutil.copytree(folder, staged)
    retired = latest.with_name(f".{LATEST}-old-{uuid.uuid4().hex[:8]}")
    if latest.exists():
        latest.rename(retired)
    staged.rename(latest)
    shutil.rmtree(retired, ignore_errors=True)


def summary(result: MonitorResult) -> str:
    """A few lines for the terminal: what drifted, how wrong, which thresholds, where the dashboard is."""
    drifted = result.drift[result.drift["drifted"]].sort_values("psi", ascending=False)
    named = ", ".join(f"{row.feature} {row.psi:.2f}" + ("" if row.signals == "psi" else f" ({row.signals})")
                      for row in drifted.itertuples()) or "none"  # fmt: skip
    lines = [
        f"monitor {result.model} {result.start}..{result.end}: {result.rows_logged} logged rows",
        f"  drift: {len(drifted)} of {len(result.drift)} features flagged ({named}); "
        f"prediction PSI {result.prediction_psi}",
        f"  reference: {result.reference_note}; {result.calibration_note}",
    ]
    if result.performance is None:
        lines.append("  error: no actuals in the window yet")
    for row in result.performance.by_model.itertuples() if result.performance else []:
        lines.append(f"  error: {row.role} {row.model}: MAE {row.mae}, RMSE {row.rmse} on {row.rows} rows")
    if result.performance and (duel := head_to_head(result.performance.scored)):
        lines.append(f"  {duel_line(duel)}")
    verdict = f"THRESHOLD CROSSED: {', '.join(result.crossed)}" if result.crossed else "no threshold crossed"
    return "\n".join([*lines, f"  {verdict}", f"dashboard: {result.dashboard}"])


def run(
    engine: Engine, model: LoadedModel, start: str, end: str, out_dir: Path, thresholds: Thresholds | None = None
) -> MonitorResult:
    """Monitor `model` over the logged predictions of [start, end] and write the dashboard and metrics."""
    result = monitor(engine, model, start, end, thresholds)
    write(result, out_dir)
    return result
