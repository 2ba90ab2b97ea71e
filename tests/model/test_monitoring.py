"""Monitoring against real databases: drift on shifted vs unchanged inputs, errors per model, the CLI's exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import joblib
import pandas as pd
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from sklearn.metrics import mean_absolute_error

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.features.history import history_features
from tiffin.lifecycle import monitor_report, monitoring
from tiffin.modeling.pipeline import build_pipeline
from tiffin.storage import database as db
from tiffin.storage import predlog
from tiffin.storage.modelstore import REFERENCE_FILE, LoadedModel

from ..conftest import Project, monitored_model

START, END = "2011-01-01", "2011-04-30"
CHAMPION, CHALLENGER = "bike_demand:champion", "bike_demand:challenger"


@pytest.fixture(scope="module")
def canonical(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    valid = Contract(bike_spec).validate(bike_raw).valid
    return valid[valid["dteday"] <= "2011-06-30"].sort_values(["dteday", "hr"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def fitted(bike_spec: DatasetSpec, canonical: pd.DataFrame) -> tuple:
    """A champion fitted on the window, and a weaker challenger (a handful of boosting rounds)."""
    train = canonical[canonical["dteday"] <= END]
    champion = build_pipeline(bike_spec, {"max_iter": 40}).fit(train, train[bike_spec.target])
    challenger = build_pipeline(bike_spec, {"max_iter": 3}).fit(train, train[bike_spec.target])
    return train, champion, challenger


@pytest.fixture
def model(bike_spec: DatasetSpec, fitted: tuple, tmp_path: Path) -> LoadedModel:
    train, champion, _ = fitted
    return monitored_model(CHAMPION, bike_spec, champion, train, tmp_path)


def log_predictions(url: str, spec: DatasetSpec, rows: pd.DataFrame, fitted: tuple) -> None:
    """The API's log: each request scored by the champion and, in shadow, by the challenger."""
    _, champion, challenger = fitted
    logged = [
        predlog.entries(spec, rows, pipeline.predict(rows), model=tag, role=role, source="api")
        for tag, role, pipeline in ((CHAMPION, "champion", champion), (CHALLENGER, "challenger", challenger))
    ]
    engine = db.engine_for(url)
    predlog.write(engine, spec, pd.concat(logged))
    engine.dispose()


def test_unchanged_inputs_do_not_drift_and_errors_are_per_model_where_actuals_arrived(
    db_url: str, bike_spec: DatasetSpec, bike_raw: pd.DataFrame, fitted: tuple, model: LoadedModel, tmp_path: Path
) -> None:
    train = fitted[0]
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, bike_raw[bike_raw["dteday"] < "2011-04-01"])  # April's actuals have not arrived
    log_predictions(db_url, bike_spec, train, fitted)

    result = monitor_report.run(engine, model, START, END, tmp_path / "reports", monitoring.Thresholds())

    assert result.rows_logged == len(train)
    assert result.drifted_features == [] and result.drift["psi"].max() < 0.01
    assert result.prediction_psi == pytest.approx(0, abs=1e-9)
    assert result.crossed == [] and result.exit_code == 0
    arrived = train[train["dteday"] < "2011-04-01"]
    by_model = result.performance.by_model.set_index("role")
    assert by_model.loc["champion", "rows"] == by_model.loc["challenger", "rows"] == len(arrived)
    for role, pipeline in (("champion", fitted[1]), ("challenger", fitted[2])):
        direct = mean_absolute_error(arrived[bike_spec.target], pipeline.predict(arrived))
        assert by_model.loc[role, "mae"] == pytest.approx(direct, abs=1e-4)
    assert result.mae == by_model.loc["champion", "mae"] < by_model.loc["challenger", "mae"]
    assert result.mae_by_model == {CHAMPION: result.mae, CHALLENGER: by_model.loc["challenger", "mae"]}
    slices = result.performance.by_slice
    assert set(slices["slice"]) == {s.title for s in bike_spec.evaluation.slices}
    assert (slices.groupby(["role", "slice"])["rows"].sum() == len(arrived)).all()
    assert monitor_report.metrics_document(result)["performance"]["head_to_head"]["better"] == "champion"
    assert f"challenger {CHALLENGER} MAE" in result.dashboard.read_text()
    assert "the champion is better" in result.dashboard.read_text()
    engine.dispose()


def test_shifted_inputs_drift_cross_the_thresholds_and_say_no_actuals_yet(
    db_url: str, bike_spec: DatasetSpec, fitted: tuple, model: LoadedModel, tmp_path: Path
) -> None:
    train = fitted[0]
    shifted = train.assign(temp=train["temp"] + 8, hum=train["hum"] * 0.6, weathersit="Light Rain")
    log_predictions(db_url, bike_spec, shifted, fitted)

    engine = db.engine_for(db_url)
    result = monitor_report.run(engine, model, START, END, tmp_path / "reports", monitoring.Thresholds())
    engine.dispose()

    assert result.drifted_features == ["temp", "hum", "weathersit"]
    # Demand follows the hour more than the weather: inputs drifted, the predictions barely moved.
    assert 0.01 < result.prediction_psi < 0.2
    assert result.crossed == ["drifted_features"] and result.exit_code == 4
    assert result.performance is None and result.mae is None
    written = json.loads((tmp_path / "reports/latest/metrics.json").read_text())
    assert written["crossed"] == result.crossed
    assert written["performance"]["note"] == "no actuals have arrived for this window yet"
    assert "No actuals have arrived" in (tmp_path / "reports/latest/index.html").read_text()


def gauges(path: Path) -> dict[tuple[str, tuple], float]:
    samples = [s for family in text_string_to_metric_families(path.read_text()) for s in family.samples]
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in samples}


def test_outputs_go_to_the_window_folder_and_latest(
    bike_spec: DatasetSpec, bike_raw: pd.DataFrame, fitted: tuple, model: LoadedModel, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'monitor.db'}"
    engine = db.engine_for(url)
    db.seed(engine, bike_spec, bike_raw[bike_raw["dteday"] <= END])
    log_predictions(url, bike_spec, fitted[0], fitted)
    out = tmp_path / "reports"
    first = monitor_report.run(engine, model, START, "2011-02-28", out)
    second = monitor_report.run(engine, model, "2011-03-01", END, out)

    assert first.folder == out / "2011-01-01_2011-02-28" and second.folder == out / "2011-03-01_2011-04-30"
    assert sorted(p.name for p in out.iterdir()) == ["2011-01-01_2011-02-28", "2011-03-01_2011-04-30", "latest"]
    for name in ("index.html", "metrics.json", "metrics.prom"):
        assert (out / "latest" / name).read_bytes() == (second.folder / name).read_bytes()
    values = gauges(out / "latest/metrics.prom")
    for row in second.drift.itertuples():
        assert values[("tiffin_monitor_feature_psi", (("feature", row.feature),))] == row.psi
    assert values[("tiffin_monitor_mae", (("model", CHAMPION), ("role", "champion")))] == second.mae
    assert values[("tiffin_monitor_drifted_features", ())] == len(second.drifted_features)
    crossed = {labels[0][1]: v for (name, labels), v in values.items() if name == "tiffin_monitor_threshold_crossed"}
    assert crossed == {c.name: float(c.crossed) for c in second.checks}
    page = (out / "latest/index.html").read_text()
    assert page.count('<img class="chart"') == 5 and 'data-charts-total="5"' in page
    assert "http://" not in page and "https://" not in page  # self-contained: no CDN, nothing fetched
    hours = monitor_report.run(engine, model, "2011-03-01T08:00", "2011-03-01T12:00", out)
    assert hours.folder.name == "2011-03-01T0800_2011-03-01T1200"
    assert 0 < hours.rows_logged == hours.overall["rows"] < 24  # actuals found for every logged hour of the day
    engine.dispose()


# -- the real command, as a scheduler runs it ---------------------------------------------------


def monitor(project: Project, url: str, tag: str, start: str, end: str, out: Path, params: Path):
    return project.run("tiffin", "monitor", "--db", url, "--model", tag, "--start", start, "--end", end,
                       "--out", str(out), "--params", str(params), check=False)  # fmt: skip


@pytest.mark.slow
def test_the_cli_exits_0_on_unchanged_inputs_and_4_when_drift_crosses_a_threshold(
    reproduced_project: Project, db_url: str, bike_spec: DatasetSpec, bike_raw: pd.DataFrame,
    canonical: pd.DataFrame, tmp_path: Path,
) -> None:  # fmt: skip
    tag = reproduced_project.read_json("models/registration.json")["tag"]
    name, version = tag.split(":")
    stored = reproduced_project.path / ".bentoml/models" / name / version
    reference = pd.read_parquet(stored / REFERENCE_FILE)
    first, last = (day.date().isoformat() for day in (reference["dteday"].min(), reference["dteday"].max()))
    in_training = canonical[(canonical["dteday"] >= first) & (canonical["dteday"] <= last)]
    shifted = canonical[canonical["dteday"].dt.month == 6].assign(temp=lambda f: f["temp"] + 15, weathersit="Mist")
    shifted = shifted.assign(hum=shifted["hum"] * 0.5)
    pipeline, spec = joblib.load(stored / "model.joblib"), load_spec(stored / "spec.yaml")
    engine = db.engine_for(db_url)
    db.seed(engine, spec, bike_raw[bike_raw["dteday"] <= "2011-06-30"])
    for rows in (in_training, shifted):
        if spec.history:  # the default spec's model: its history features, as the batch runner logs them
            rows = rows.join(history_features(spec, canonical, rows))
        logged = predlog.entries(spec, rows, pipeline.predict(rows), model=tag, role="champion", source="batch")
        predlog.write(engine, spec, logged)
    engine.dispose()
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"monitor": {"min_rows": 100, "max_drifted_features": 2}}))
    out = tmp_path / "reports"

    calm = monitor(reproduced_project, db_url, tag, first, last, out, params)
    assert calm.returncode == 0, calm.stdout + calm.stderr
    assert "no threshold crossed" in calm.stdout
    assert f"dashboard: {out / f'{first}_{last}' / 'index.html'}" in calm.stdout
    assert json.loads((out / "latest/metrics.json").read_text())["rows"] == {
        "logged": len(in_training), "with_actuals": len(in_training)
    }  # fmt: skip

    alarm = monitor(reproduced_project, db_url, tag, "2011-06-01", "2011-06-30", out, params)
    assert alarm.returncode == 4, alarm.stdout + alarm.stderr
    assert "THRESHOLD CROSSED: drifted_features" in alarm.stdout
    latest = json.loads((out / "latest/metrics.json").read_text())
    assert latest["window"] == {"start": "2011-06-01", "end": "2011-06-30"}
    assert {"temp", "hum", "weathersit"} <= set(latest["drift"]["drifted"])

    # Calibrated on its training rows against the hour-of-week x season profile: the same shifted June alarms,
    # judged at the model's own thresholds, and the report says which reference and thresholds judged it.
    tuned = tmp_path / "tuned.yaml"
    tuned.write_text(yaml.safe_dump({"monitor": {"min_rows": 100, "max_drifted_features": 2, "reference": "profile",
                                                 "window_days": 28, "alarms_per_quarter": 1.0}}))  # fmt: skip
    kept = (stored / "drift_thresholds.json").read_bytes()  # the stage's calibration: the session's fixture
    try:
        # `--model` given to `monitor` itself reaches `calibrate` (it must not fall back to the champion).
        done = reproduced_project.run("tiffin", "monitor", "--model", tag, "calibrate", "--params", str(tuned),
                                      "--out", str(tmp_path / "thresholds.json"))  # fmt: skip
        written = json.loads((tmp_path / "thresholds.json").read_text())
        assert f"calibrated {tag}: {written['windows']} training windows of 28 days" in done.stdout
        assert written["model"] == tag and written["reference"] == "profile" and written["windows"] > 0
        assert json.loads((stored / "drift_thresholds.json").read_text()) == written
        alarm = monitor(reproduced_project, db_url, tag, "2011-06-01", "2011-06-30", out, tuned)
    finally:
        (stored / "drift_thresholds.json").write_bytes(kept)
    assert alarm.returncode == 4, alarm.stdout + alarm.stderr
    drift = json.loads((out / "latest/metrics.json").read_text())["drift"]
    assert "calibrated on" in drift["calibration"] and "hour-of-week x season profile" in drift["reference"]
    assert {"temp", "hum", "weathersit"} <= set(drift["drifted"])
    thresholds = {row["feature"]: row["threshold"] for row in drift["features"]}
    assert thresholds == {name: written["features"][name]["threshold"] for name in thresholds}
