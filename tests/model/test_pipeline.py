"""The DVC pipeline for real: `dvc repro`, reproducibility, quarantine, a second dataset, experiments."""

import hashlib

import joblib
import pandas as pd
import pytest

from ..conftest import ROOT, SHARES, SMALL_WINDOW, Project, small_bike_project
from ..fixtures.store_sales.make_data import make_order_lines

pytestmark = pytest.mark.slow


def test_repro_ingests_validates_trains_evaluates_and_registers(project: Project) -> None:
    small_bike_project(project).run("dvc", "repro")

    metrics = project.read_json("eval/metrics.json")
    assert {"mae", "rmse", "r2"} <= set(metrics["test"]) and "mae" in metrics["baseline"]["test"]
    assert metrics["test"]["mae"] < metrics["baseline"]["test"]["mae"]
    assert set(project.read_json("eval/slices.json")) == {"weathersit", "season", "hour_band", "workingday"}
    assert "slices" not in metrics and project.read_json("eval/series.json")["series"] == []
    snapshot = pd.read_parquet(project.path / "data/snapshot/rows.parquet")
    assert snapshot["dteday"].min() == "2011-01-01" and snapshot["dteday"].max() == "2011-04-30"

    tag = project.read_json("models/registration.json")["tag"]
    name, version = tag.split(":")
    stored = project.path / ".bentoml/models" / name / version / "model.joblib"
    model_bytes = (project.path / "models/model.joblib").read_bytes()
    assert stored.read_bytes() == model_bytes
    assert version == hashlib.sha256(model_bytes).hexdigest()[:16]
    lineage = project.run("tiffin", "models", "show").stdout
    snapshot_sha = hashlib.sha256((project.path / "data/snapshot/rows.parquet").read_bytes()).hexdigest()
    assert snapshot_sha in lineage and '"git_commit"' in lineage and '"max_iter": 60' in lineage


def test_a_second_repro_runs_nothing_and_a_forced_one_gives_the_same_bytes(project: Project) -> None:
    small_bike_project(project).run("dvc", "repro")
    lock = (project.path / "dvc.lock").read_bytes()

    again = project.run("dvc", "repro").stdout
    assert "Running stage" not in again
    assert "up to date" in project.run("dvc", "status").stdout

    project.run("dvc", "repro", "--force")
    assert (project.path / "dvc.lock").read_bytes() == lock


def test_moving_the_window_takes_a_new_snapshot(project: Project) -> None:
    small_bike_project(project).run("dvc", "repro", "ingest")
    project.set_params(ingest={"start": "2011-01-01", "end": "2011-02-28"})
    status = project.run("dvc", "status", "ingest").stdout
    assert "params.yaml" in status and "modified" in status
    project.run("dvc", "repro", "ingest")
    snapshot = pd.read_parquet(project.path / "data/snapshot/rows.parquet")
    assert snapshot["dteday"].max() == "2011-02-28"


def test_too_many_rows_breaking_the_contract_stop_the_pipeline_with_the_reasons(project: Project) -> None:
    raw = pd.read_csv(ROOT / "data/seed/bike_sharing_hourly.csv.gz")
    raw = raw[raw["dteday"].between("2011-01-01", "2011-04-30")].reset_index(drop=True)
    raw = raw.astype({"temp": object})
    raw.loc[0:59, "hr"] = [str(24 + i) for i in range(60)]  # ~2 % of the window, out of range, keys unique
    raw.loc[60:64, "temp"] = "warm"
    raw.to_csv(project.path / "doctored.csv", index=False)
    project.set_params(ingest=SMALL_WINDOW)
    project.run("tiffin", "db", "seed", "--file", "doctored.csv")

    failed = project.run("dvc", "repro", "validate", check=False)
    assert failed.returncode != 0
    assert "failed the contract (limit 1.00 %)" in failed.stderr and "hr in_range(0, 23): 60" in failed.stderr

    project.set_params(validate={"max_quarantine_share": 0.05})
    project.run("dvc", "repro", "validate")
    quarantine = pd.read_parquet(project.path / "data/validated/quarantine.parquet")
    assert len(quarantine) == 65 and set(quarantine["field"]) == {"hr", "temp"}
    assert {"row", "dteday", "hr", "field", "value", "rule"} <= set(quarantine.columns)
    report = project.read_json("eval/validation.json")
    assert report["quarantined_rows"] == 65 and report["valid_rows"] + 65 == report["rows"]


def test_a_second_dataset_needs_only_a_spec_and_params(project: Project) -> None:
    """Other column names, target, categories and key: no framework code changes."""
    spec = (ROOT / "tests/fixtures/store_sales/spec.yaml").read_text()
    (project.path / "specs/store_sales.yaml").write_text(spec.replace("order_lines.csv", "data/seed/order_lines.csv"))
    make_order_lines(project.path / "data/seed/order_lines.csv")
    project.set_params(
        spec="specs/store_sales.yaml",
        ingest={"start": "2024-01-01", "end": "2024-04-30"},
        validate={"max_quarantine_share": 0.01},
        split=SHARES,
        train={"max_iter": 80, "random_state": 7},
    )
    project.run("tiffin", "db", "seed")
    project.run("dvc", "repro")

    assert project.read_json("models/registration.json")["tag"].startswith("store_units:")
    quarantine = pd.read_parquet(project.path / "data/validated/quarantine.parquet")
    assert quarantine[["order_id", "field", "value"]].values.tolist() == [
        ["11", "region", "mars"],
        ["201", "region", "mars"],
    ]
    metrics = project.read_json("eval/metrics.json")
    assert set(project.read_json("eval/slices.json")) == {"region", "promo", "price_band"}
    assert metrics["test"]["mae"] < metrics["baseline"]["test"]["mae"]
    features = joblib.load(project.path / "models/model.joblib").named_steps["features"].get_feature_names_out()
    assert "margin" not in features and "units" not in features


def test_a_dvc_experiment_runs_and_compares_with_the_workspace(project: Project) -> None:
    small_bike_project(project).run("dvc", "repro")
    project.commit("baseline run")
    project.run("dvc", "exp", "run", "-n", "faster", "-S", "train.learning_rate=0.3", "-S", "train.max_iter=30")
    shown = project.run("dvc", "exp", "show", "--csv", "--only-changed").stdout
    assert "faster" in shown and "test.mae" in shown
    diff = project.run("dvc", "metrics", "diff", "HEAD", "--md").stdout
    assert "test.mae" in diff
