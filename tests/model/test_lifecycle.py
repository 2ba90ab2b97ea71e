"""Champion and challenger for real: the gate in `dvc repro`, promote/rollback, shadow scoring in batch and API."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.spec import load_spec
from tiffin.features import logged as prediction_log
from tiffin.serving.server import BentoServer

from ..conftest import ROOT, SHARES, SMALL_WINDOW, Project, make_project

pytestmark = pytest.mark.slow

# Three models on the same data: a weak one first, then a good one, then a weak one again.
WEAK, GOOD, WEAKER = ({"max_iter": n, "learning_rate": 0.1, "random_state": 42} for n in (12, 80, 8))


@dataclass
class Lifecycle:
    project: Project
    first: str
    good: str
    weak: str


def repro(project: Project, train: dict) -> str:
    project.set_params(train=train)
    project.run("dvc", "repro")
    return project.read_json("models/registration.json")["tag"]


def champion(project: Project) -> dict:
    """The example dataset's entry in the champion file."""
    return project.read_json("models/champion.json")["datasets"]["bike_demand"]


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory: pytest.TempPathFactory) -> Lifecycle:
    project = make_project(tmp_path_factory.mktemp("lifecycle") / "project")
    # The weak models do not beat the naive baseline; the gate, not evaluate, is under test here. The row-only
    # spec: promotion, rollback and shadow scoring are the same for any spec (history: tests/service/test_history_api).
    project.set_params(spec="specs/bike_sharing_rows.yaml", ingest=SMALL_WINDOW, split=SHARES,
                       evaluate={"must_beat_baseline": False})  # fmt: skip
    project.run("tiffin", "db", "seed")
    first = repro(project, WEAK)
    assert champion(project)["champion"] == first
    good = repro(project, GOOD)
    assert champion(project)["champion"] == good
    weak = repro(project, WEAKER)
    return Lifecycle(project, first, good, weak)


def test_the_first_model_is_promoted_without_a_baseline(lifecycle: Lifecycle) -> None:
    first = champion(lifecycle.project)["history"][0]
    assert first["tag"] == lifecycle.first and first["previous"] is None
    assert first["decision"]["reasons"] == ["first model: promoted without a baseline"]


def test_a_better_candidate_is_promoted_with_its_numbers(lifecycle: Lifecycle) -> None:
    promotion = champion(lifecycle.project)["history"][1]
    assert (promotion["tag"], promotion["previous"]) == (lifecycle.good, lifecycle.first)
    decision = promotion["decision"]
    assert decision["blessed"] and decision["overall"]["change"] < -0.02
    assert {"slice", "segment", "rows", "candidate_mae", "champion_mae", "change", "ok"} <= set(decision["slices"][0])


def test_a_worse_candidate_is_not_promoted_and_the_report_says_why(lifecycle: Lifecycle) -> None:
    project = lifecycle.project
    state = champion(project)
    assert state["champion"] == lifecycle.good and len(state["history"]) == 2
    blessing = project.read_json("eval/blessing.json")
    assert blessing["candidate"] == lifecycle.weak and not blessing["blessed"]
    assert "not better by the margin" in blessing["reasons"][0]
    shown = project.run("tiffin", "models", "show", lifecycle.weak).stdout
    assert "NOT BLESSED" in shown and lifecycle.good in shown
    listed = project.run("tiffin", "models", "list").stdout
    assert f"{lifecycle.good}" in listed and "champion" in listed


def test_a_second_repro_keeps_the_decision_and_the_lock(lifecycle: Lifecycle) -> None:
    project = lifecycle.project
    lock = (project.path / "dvc.lock").read_bytes()
    project.run("dvc", "repro", "--force", "--single-item", "bless")
    assert (project.path / "dvc.lock").read_bytes() == lock


def test_batch_scores_with_the_champion_and_shadows_the_challenger(lifecycle: Lifecycle) -> None:
    project = lifecycle.project
    project.run("tiffin", "models", "challenger", lifecycle.weak)
    url = project.env["TIFFIN_DB_URL"]
    project.run("tiffin", "batch", "--start", "2011-04-01", "--end", "2011-04-07")
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        by_model = dict(connection.execute(sa.text("SELECT model, count(*) FROM predictions GROUP BY model")).all())
    logged = prediction_log.read(
        engine, load_spec(project.path / "specs/bike_sharing_rows.yaml"), "2011-04-01", "2011-04-07"
    )
    engine.dispose()
    assert by_model == {lifecycle.good: 168, lifecycle.weak: 168}
    assert logged.groupby(["model", "role"]).size().to_dict() == {
        (lifecycle.good, "champion"): 168,
        (lifecycle.weak, "challenger"): 168,
    }
    pairs = logged.pivot(index="row_key", columns="role", values="prediction")
    assert pairs.notna().all().all() and (pairs["champion"] != pairs["challenger"]).mean() > 0.9
    project.run("tiffin", "models", "challenger", "--clear")


def test_the_api_answers_with_the_champion_and_logs_the_challenger_in_shadow(
    lifecycle: Lifecycle, bike_raw: pd.DataFrame, tmp_path: Path
) -> None:
    project = lifecycle.project
    log_db = f"sqlite:///{tmp_path / 'log.db'}"
    env = {**project.env, "TIFFIN_MODEL": lifecycle.good, "TIFFIN_CHALLENGER": lifecycle.weak,
           "TIFFIN_LOG_SAMPLE": "1", "TIFFIN_DB_URL": log_db, "TIFFIN_WORKERS": "1"}  # fmt: skip
    rows = bike_raw[bike_raw["dteday"].between("2011-04-01", "2011-04-02")].head(40)
    records = json.loads(rows.drop(columns=["casual", "registered", "cnt"]).to_json(orient="records"))
    with BentoServer("service.app:Tiffin", cwd=ROOT, env=env, log=tmp_path / "server.log").wait_ready() as server:
        answers = [httpx.post(f"{server.url}/predict", json={"rows": records[i : i + 10]}) for i in range(0, 40, 10)]
        logged = wait_for_rows(log_db, 80)
    assert all(answer.status_code == 200 and answer.json()["model"] == lifecycle.good for answer in answers)
    served = [p for answer in answers for p in answer.json()["predictions"]]
    assert logged.groupby("role")["model"].first().to_dict() == {"champion": lifecycle.good,
                                                                 "challenger": lifecycle.weak}  # fmt: skip
    champion_log = logged[logged["role"] == "champion"]
    assert champion_log["prediction"].tolist() == pytest.approx(served)
    assert set(champion_log["source"]) == {"api"} and champion_log["event_time"].str.startswith("2011-04-0").all()
    # The challenger's logged predictions are its own: the same as scoring those rows offline.
    challenger_log = logged[logged["role"] == "challenger"].reset_index(drop=True)
    offline = offline_predictions(project, lifecycle.weak, rows)
    assert challenger_log["prediction"].tolist() == pytest.approx(offline, rel=1e-9)
    # Both models' rows carry the record's key, to be joined with actual demand later.
    assert challenger_log["row_key"].tolist() == champion_log["row_key"].tolist()
    assert set(json.loads(challenger_log["row_key"][0])) == {"dteday", "hr"}


def wait_for_rows(url: str, rows: int, timeout: float = 20) -> pd.DataFrame:
    engine = sa.create_engine(url)
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                logged = pd.read_sql("SELECT * FROM prediction_log ORDER BY id", engine)
            except sa.exc.OperationalError:
                logged = pd.DataFrame()
            if len(logged) >= rows or time.monotonic() > deadline:
                return logged
            time.sleep(0.3)
    finally:
        engine.dispose()


def offline_predictions(project: Project, tag: str, rows: pd.DataFrame) -> list[float]:
    import joblib

    from tiffin.core.contract import Contract

    name, version = tag.split(":")
    folder = project.path / ".bentoml/models" / name / version
    spec = load_spec(folder / "spec.yaml")
    valid = Contract(spec).validate(rows.reset_index(drop=True), serving=True).valid
    return joblib.load(folder / "model.joblib").predict(valid).tolist()


def test_rollback_restores_the_previous_champion_and_the_gate_does_not_undo_it(lifecycle: Lifecycle) -> None:
    project = lifecycle.project
    done = project.run("tiffin", "models", "rollback", "--reason", "worse in production")
    assert "rolled back" in done.stdout
    state = champion(project)
    assert state["champion"] == lifecycle.first
    assert state["history"][-1] | {"at": None} == {"event": "rollback", "tag": lifecycle.first,
                                                   "previous": lifecycle.good, "at": None,
                                                   "by": state["history"][-1]["by"],
                                                   "reason": "worse in production"}  # fmt: skip
    # The batch runner now scores with the restored champion.
    project.run("tiffin", "batch", "--start", "2011-04-08", "--end", "2011-04-08", "--shadow", "none")
    engine = sa.create_engine(project.env["TIFFIN_DB_URL"])
    with engine.connect() as connection:
        last = connection.execute(sa.text("SELECT model FROM batch_runs ORDER BY started_at DESC LIMIT 1")).scalar()
    engine.dispose()
    assert last == lifecycle.first
    # Re-training the rolled-back model: the gate finds it better than the champion but leaves it out.
    assert repro(project, GOOD) == lifecycle.good
    blessing = project.read_json("eval/blessing.json")
    assert not blessing["blessed"] and "rolled back" in blessing["reasons"][0]
    assert champion(project)["champion"] == lifecycle.first
    # By hand it can come back.
    project.run("tiffin", "models", "promote", lifecycle.good, "--reason", "fixed upstream")
    assert champion(project)["champion"] == lifecycle.good
    with pytest.raises(AssertionError, match="already the champion"):
        project.run("tiffin", "models", "promote", lifecycle.good)
