"""Retraining against a real database: the metric-drop trigger, `tiffin retrain`, and a short simulation."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import pandas as pd
import pytest

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.lifecycle import retraining
from tiffin.storage import database as db
from tiffin.storage import predlog
from tiffin.storage.modelstore import LoadedModel
from tiffin.storage.retrain_ledger import RetrainLedger

from ..conftest import Project, make_project

RULES = retraining.RetrainRules(min_new_hours=10_000, max_age_days=365, max_mae_ratio=1.5, metric_window_days=14)


def champion_logging(db_url: str, spec: DatasetSpec, raw: pd.DataFrame, error: float) -> LoadedModel:
    """A champion trained until 2012-05-31 (test MAE 40) that has scored June 1-14 off by `error` a row."""
    engine = db.engine_for(db_url)
    db.seed(engine, spec, raw[raw["dteday"] <= "2012-06-14"])
    june = Contract(spec).validate(raw[raw["dteday"].between("2012-06-01", "2012-06-14")]).valid
    predictions = june[spec.target].to_numpy(dtype="float64") + error
    predlog.write(engine, spec, predlog.entries(spec, june, predictions, model="m:1", role="champion", source="batch"))
    engine.dispose()
    return LoadedModel("m:1", None, spec, {"params": {"ingest": {"end": "2012-05-31"}},
                                           "metrics": {"test": {"mae": 40.0}}}, Path("."))  # fmt: skip


@pytest.mark.parametrize(("error", "fires"), [(30.0, False), (75.0, True)])
def test_the_metric_drop_trigger_reads_the_log_and_the_actuals(db_url, bike_spec, bike_raw, error, fires):
    champion = champion_logging(db_url, bike_spec, bike_raw, error)
    found = {t.name: t for t in retraining.check(db.engine_for(db_url), champion, RULES, now=date(2012, 6, 14),
                                                 force=False)}  # fmt: skip
    assert found["metric_drop"].fired is fires
    assert f"production MAE {error:.2f}" in found["metric_drop"].detail
    arrived = bike_raw["dteday"].between("2012-06-01", "2012-06-14").sum()
    assert not found["new_data"].fired and found["new_data"].detail.startswith(
        f"{arrived} hours of data, {arrived} rows, after 2012-05-31"
    )
    assert not found["schedule"].fired and not found["request"].fired


@pytest.mark.slow
def test_tiffin_retrain_moves_the_window_and_the_gate_decides(project: Project) -> None:
    project.set_params(ingest={"start": "2011-01-01", "end": "2011-03-31"},
                       split={"validation_start": "2011-03-01", "test_start": "2011-03-15"},
                       train={"max_iter": 40, "random_state": 42})  # fmt: skip
    project.run("tiffin", "db", "seed", "--until", "2011-04-20T23:00")
    project.run("dvc", "repro")
    quiet = project.run("tiffin", "retrain", "--now", "2011-04-20")  # 20 days of new rows: under four weeks
    assert '"retrain": false' in quiet.stdout.splitlines()[-1]
    project.run("tiffin", "db", "seed", "--until", "2011-04-30T23:00")

    done = project.run("tiffin", "retrain", "--now", "2011-04-30", "--report", "retrain.md")
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    assert {line["trigger"] for line in lines if line.get("fired")} == {"new_data"}
    outcome = lines[-1]
    assert outcome["params"] == {"ingest.end": "2011-04-30", "split.test_start": "2011-04-03",
                                 "split.validation_start": "2011-03-06"}  # fmt: skip
    assert outcome["candidate"] != outcome["champion"] and "reasons" in outcome
    assert project.read_json("eval/blessing.json")["candidate"] == outcome["candidate"]
    runs = RetrainLedger(db.engine_for(project.env["TIFFIN_DB_URL"])).run_table()
    assert len(runs) == 1 and outcome["run_id"] == runs["run_id"][0] and outcome["cause"] == "new_data"
    assert runs[["trigger", "candidate", "champion"]].iloc[0].tolist() == ["new_data", outcome["candidate"],
                                                                          outcome["champion"]]  # fmt: skip
    assert runs["status"][0] == ("promoted" if outcome["blessed"] else "not promoted")
    assert "Retrained for: **new_data**" in (project.path / "retrain.md").read_text()
    assert "| new_data | **yes** |" in (project.path / "retrain.md").read_text()
    assert "up to date" in project.run("dvc", "status").stdout


@pytest.mark.slow
def test_a_short_simulation_shows_error_retrain_and_promotion(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    out = tmp_path / "report"
    done = project.run(
        "tiffin", "simulate", "--start", "2011-05-01", "--end", "2011-06-11", "--step-days", "14",
        "--workdir", str(tmp_path / "work"), "--out", str(out),
        "--set", "train.max_iter=40", "--set", "evaluate.must_beat_baseline=false",
        "--set", "retrain.holdout_days=14", "--set", "retrain.validation_days=14", "--set", "retrain.min_new_hours=300",
    )  # fmt: skip
    assert f"report: {out / 'index.html'}" in done.stdout
    steps = pd.read_csv(out / "steps.csv")
    assert steps["start"].tolist() == ["2011-05-01", "2011-05-15", "2011-05-29"]
    assert (steps["rows"] > 300).all() and steps["champion_mae"].notna().all()
    assert steps["retrained"].all() and steps["triggers"].str.contains("new_data").all()
    assert steps["candidate"].notna().all()
    runs = pd.read_csv(out / "retrain_runs.csv")
    assert len(runs) == 3 and (runs["trigger"] == steps["cause"]).all() and runs["status"].ne("running").all()
    page = (out / "index.html").read_text()
    assert 'class="chart"' in page and "retrains" in page
    assert (out / "chart.png").read_bytes()[:4] == b"\x89PNG"
