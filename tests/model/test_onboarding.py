"""Issue 14's proof: a new many-series table in another time zone, from `tiffin spec init` to a load-tested service.

A generated hourly table (six sensors in Paris, a clock that repeats an hour, 5 % missing counts, repeated keys,
one sensor where the naive baseline wins) goes through what a new user does, in a fresh copy of the project with
the example's champion file in place: draft a spec, decide what the draft asks, seed, `dvc repro`, the API, the
batch runner, monitoring, the retraining check and the load test. Nothing but the spec and params is edited.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tiffin.serving.server import BentoServer

from ..conftest import ROOT, Project, make_project
from ..fixtures.sensors.make_data import ODD_ONE, REPEATED_KEYS, SENSORS, ZONE, make_sensor_counts

pytestmark = pytest.mark.slow

SEED = "data/seed/sensor_counts.csv.gz"
SPEC = "specs/sensor_counts.yaml"


def decide(project: Project) -> dict:
    """What a person writes into the draft where it says DECIDE: the clock's zone; ranges widened."""
    path = project.path / SPEC
    spec = yaml.safe_load(path.read_text())
    assert spec["target"] == "passages" and spec["series"] == ["sensor"]  # the draft's guesses, kept
    spec["timestamp"]["timezone"] = ZONE
    spec["columns"]["temperature_c"].update(min=-40, max=50, description="Air temperature, °C")
    spec["columns"]["passages"].update(max=None, description="Passages counted in the hour")
    spec["description"] = "Passages per hour at six gates"
    path.write_text(yaml.safe_dump(spec, sort_keys=False, allow_unicode=True))
    return spec


def test_a_new_dataset_goes_from_a_table_to_a_load_tested_service(tmp_path: Path) -> None:
    project = make_project(tmp_path / "project")
    (project.path / "models").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "models/champion.json", project.path / "models/champion.json")  # as in a fresh clone
    project.commit("the example's champion file")
    example_champion = json.loads((ROOT / "models/champion.json").read_text())["datasets"]["bike_demand"]
    rows = make_sensor_counts(project.path / SEED)

    # Draft, decide, point params at it.
    project.run("tiffin", "spec", "init", "--csv", SEED, "--table", "sensor_counts", "--out", SPEC)
    spec = decide(project)
    assert spec["columns"]["sensor"]["values"] == SENSORS and spec["key"] == ["measured_at", "sensor"]
    project.set_params(
        spec=SPEC,
        ingest={"start": "2024-09-01", "end": "2024-12-10"},
        split={"validation_start": "2024-11-01", "test_start": "2024-11-20"},
        train={"max_iter": 80, "learning_rate": 0.1, "random_state": 42},
    )

    # Seed: repeated keys (the 12 copies, and the hour the clock repeats) are rejects, not "already there".
    seeded = project.run("tiffin", "db", "seed").stdout
    assert "0 already there" in seeded and "duplicate keys within the file" in seeded
    rejects = pd.read_csv(project.path / "data/rejects/seed_sensor_counts.csv")
    assert set(rejects["rule"]) == {"duplicate key"} and len(rejects) >= REPEATED_KEYS
    assert (rejects["kept_row"] < rejects["row"]).all()

    # The pipeline, unchanged, on a clone whose champion file names another dataset's model.
    project.run("dvc", "repro")
    validation = project.read_json("eval/validation.json")
    missing = rows["passages"].isna().sum()
    assert validation["unlabeled_rows"] > 0.8 * missing * (100 / 122)  # about 5 % of the window: apart, not failed
    assert validation["quarantined_share"] < 0.01  # the default limit holds: missing targets are no failures
    series = {s["series"]: s["verdict"] for s in project.read_json("eval/series.json")["series"]}
    assert series[ODD_ONE] == "loses" and set(series) == set(SENSORS)
    assert set(project.read_json("eval/slices.json")["sensor"]) == set(SENSORS)
    assert "gate-" not in project.run("dvc", "metrics", "show").stdout  # per-series figures stay out of it

    states = project.read_json("models/champion.json")["datasets"]
    tag = project.read_json("models/registration.json")["tag"]
    assert states["bike_demand"] == example_champion and states["sensor_counts"]["champion"] == tag
    assert states["sensor_counts"]["history"][0]["reason"] == "first model: promoted without a baseline"
    refused = project.run("tiffin", "models", "rollback", check=False)
    assert refused.returncode != 0 and "no earlier champion" in refused.stderr
    assert project.read_json("models/champion.json")["datasets"] == states  # a rollback never crosses datasets

    # A binding per-series verdict stops the pipeline, naming the series.
    project.set_params(evaluate={"must_beat_baseline": "per_series", "min_series_rows": 50})
    stopped = project.run("dvc", "repro", "evaluate", check=False)
    assert stopped.returncode != 0 and f"loses to the naive baseline on 1 of 6 series: {ODD_ONE}" in stopped.stderr
    project.set_params(evaluate={"must_beat_baseline": True, "min_series_rows": 50})
    project.run("dvc", "repro")

    # The API: one moment written three ways is one local hour; a time the clock skips is refused.
    env = {**project.env, "TIFFIN_WORKERS": "1"}
    with BentoServer("service.app:Tiffin", cwd=project.path, env=env, log=tmp_path / "server.log").wait_ready() as api:
        base = {"sensor": "gate-2", "temperature_c": 4.5}
        moments = ["2024-12-12T08:00:00", "2024-12-12T07:00:00Z", "2024-12-12T08:00:00+01:00"]
        answer = httpx.post(f"{api.url}/predict", json={"rows": [{**base, "measured_at": m} for m in moments]})
        assert answer.status_code == 200 and len(set(answer.json()["predictions"])) == 1
        gap = httpx.post(f"{api.url}/predict", json={"rows": [{**base, "measured_at": "2025-03-30T02:30:00"}]})
        assert gap.status_code == 400 and "exists in Europe/Paris" in gap.text

        # The load test, with traffic generated from this spec and its held-out rows.
        slo = yaml.safe_load((ROOT / "loadtests/slo.yaml").read_text())
        slo.update(users=4, spawn_rate=4, warmup_seconds=1)
        lenient = {"p95_ms": 3000, "p99_ms": 6000, "max_failure_ratio": 0.0, "min_rps": 0.5}
        slo["objectives"] = {kind: dict(lenient) for kind in ("single", "multi", "invalid")}
        (tmp_path / "slo.yaml").write_text(yaml.safe_dump(slo))
        gate = project.run("tiffin", "loadtest", "--host", api.url, "--slo", str(tmp_path / "slo.yaml"),
                           "--run-seconds", "4", "--out", str(tmp_path / "gate"), check=False)  # fmt: skip
        assert gate.returncode == 0, gate.stdout + gate.stderr

    # Batch: every row of the production weeks, unlabeled ones included.
    project.run("tiffin", "batch", "--start", "2024-12-11", "--end", "2024-12-31")
    engine = sa.create_engine(project.env["TIFFIN_DB_URL"])
    with engine.connect() as connection:
        scored = connection.execute(sa.text("SELECT COUNT(*) FROM predictions")).scalar_one()
    window = rows[rows["measured_at"].str[:10].between("2024-12-11", "2024-12-31")]
    unique_keys = window.drop_duplicates(["measured_at", "sensor"])
    assert scored >= 0.99 * len(unique_keys) and window["passages"].isna().sum() > 0

    # Monitoring: production error counts only the rows whose count has arrived; per-sensor segments.
    monitored = project.run("tiffin", "monitor", "--start", "2024-12-11", "--end", "2024-12-31", check=False)
    assert monitored.returncode in (0, 4), monitored.stderr
    metrics = json.loads(next(project.path.glob("reports/**/2024-12-11_2024-12-31/metrics.json")).read_text())
    labeled = int(window.drop_duplicates(["measured_at", "sensor"])["passages"].notna().sum())
    assert 0.95 * labeled <= metrics["rows"]["with_actuals"] <= labeled < metrics["rows"]["logged"]
    assert {row["segment"] for row in metrics["performance"]["by_slice"] if row["slice"] == "sensor"} == set(SENSORS)

    # Retraining: three weeks of new data are 504 hours per sensor, not 3,000 rows: no new-data trigger.
    checked = project.run("tiffin", "retrain", "--dry-run", "--now", "2024-12-31").stdout
    new_data = next(json.loads(line) for line in checked.splitlines() if '"new_data"' in line)
    assert not new_data["fired"] and "per series (median of 6)" in new_data["detail"]
