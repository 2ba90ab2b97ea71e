"""Replay real hours into a fresh copy of the project, step by step, as production would see them.

`tiffin simulate` copies the pipeline into a work folder with its own database and model store,
trains the first model on the data before `--start`, then for every step: the step's hours arrive in
the source table, the batch runner scores them with the champion (the first model keeps scoring in
shadow, as the "never retrained" reference), `monitor` measures drift and error on them, and the
retraining check runs; a retrain is a real `dvc repro` whose gate decides the promotion. The report
(steps.csv, index.html and a chart) shows the error grow, the drift, the retrains and the error after.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path

import pandas as pd

from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.jobs.batch import BatchJob
from tiffin.lifecycle import monitor_report, monitoring, retraining
from tiffin.lifecycle.promotion import latest_decision
from tiffin.lifecycle.retraining import RetrainRules, moved_window, update_params
from tiffin.serving.scorer import Scorer
from tiffin.storage import paths
from tiffin.storage.champion import ChampionState
from tiffin.storage.database import engine_for, read_seed_file, seed
from tiffin.storage.modelstore import LoadedModel, ModelStore
from tiffin.storage.retrain_ledger import RetrainLedger
from tiffin.storage.settings import load_params

PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", "pipelines", "specs", "src", "data/seed"]
log = logging.getLogger("tiffin.simulate")


@dataclass
class Step:
    start: str
    end: str
    rows: int
    champion: str
    champion_mae: float | None
    reference_mae: float | None  # the first model, never retrained, on the same rows
    drifted_features: list[str]
    prediction_psi: float | None
    crossed: list[str]
    triggers: list[str]  # fired (the metric drop: held at retrain.metric_checks consecutive checks)
    decision: str = ""  # the arbitration's: retrain (its cause), the cooldown, or no trigger
    cause: str | None = None
    retrained: bool = False
    candidate: str | None = None
    promoted: bool = False
    reasons: list[str] = field(default_factory=list)


def prepare(root: Path, workdir: Path, start: date, overrides: dict[str, str]) -> None:
    """A copy of the project's pipeline whose data ends the day before `start`."""
    if workdir.exists():
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True)
    for name in PROJECT_FILES:
        source, target = root / name, workdir / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=workdir, check=True)
    params_file = workdir / paths.PARAMS
    update_params(params_file, overrides)
    params = load_params(params_file)
    rules = RetrainRules.from_params(params.get("retrain"))
    update_params(params_file, moved_window(params, start - timedelta(days=1), rules))


class Replay:
    """The replay itself, in the work folder: its own database and model store, named explicitly (the
    stages that `dvc repro` runs there get them through their environment)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.params_file = workdir / paths.PARAMS
        params = load_params(self.params_file)
        self.spec = load_spec(workdir / params["spec"])
        self.raw = read_seed_file(workdir / self.spec.source.seed_file)
        self.contract = Contract(self.spec)
        db_url = f"sqlite:///{workdir / 'data/tiffin.db'}"
        self.engine = engine_for(db_url)
        self.store = ModelStore(workdir / paths.MODEL_STORE)
        self.env = {**os.environ, "BENTOML_HOME": str(self.store.home), "TIFFIN_DB_URL": db_url}
        self.env.pop("TIFFIN_CHAMPION_FILE", None)  # the copy's own champion file
        self.thresholds = monitoring.Thresholds.from_params(params.get("monitor"))
        self.rules = RetrainRules.from_params(params.get("retrain"))
        self.ledger = RetrainLedger(self.engine)
        self.first: str | None = None
        self._models: dict[str, tuple[LoadedModel, Scorer]] = {}  # tags are content hashes: never stale

    def run(self, start: date, end: date, step_days: int) -> list[Step]:
        self.arrive(datetime.combine(start, datetime.min.time()) - timedelta(seconds=1))
        log.info("training the first model on the data before %s", start)
        retraining.run_dvc_repro(self.workdir, self.env)
        self.first = self.champion_tag()
        steps, day = [], start
        while day <= end:
            last = min(day + timedelta(days=step_days - 1), end)
            if (end - last).days < step_days // 2:  # no stub of a step at the end: the last one takes the rest
                last = end
            steps.append(self.step(day, last))
            log.info("%s", json.dumps(asdict(steps[-1]), default=str))
            day = last + timedelta(days=1)
        return steps

    def arrive(self, until: datetime) -> None:
        """The real hours up to `until` arrive in the source table."""
        seed(self.engine, self.spec, self.raw, held_back=self.contract.held_back(self.raw, until))

    def model(self, tag: str) -> tuple[LoadedModel, Scorer]:
        """A registered model and its scorer, loaded from the store once."""
        if tag not in self._models:
            loaded = self.store.load(tag)
            self._models[tag] = (loaded, Scorer.from_model(loaded))
        return self._models[tag]

    def champion_tag(self) -> str:
        return ChampionState.load(self.workdir / paths.CHAMPION, dataset=self.spec.name).champion

    def step(self, day: date, last: date) -> Step:
        """The step's hours arrive; score them, monitor them, and check whether to retrain."""
        self.arrive(datetime.combine(last, datetime.max.time()))
        champion, scorer = self.model(self.champion_tag())
        # The first model keeps scoring in shadow: what "never retrained" would give.
        shadow = None if champion.tag == self.first else (self.first, self.model(self.first)[1])
        job = BatchJob(self.engine, scorer, champion.tag, shadow=shadow)
        scored = job.run(day.isoformat(), last.isoformat())
        result = monitor_report.run(self.engine, champion, day.isoformat(), last.isoformat(),
                                    self.workdir / paths.MONITOR_REPORTS, self.thresholds)  # fmt: skip
        raw = retraining.check(self.engine, champion, self.rules, now=last, force=False)
        with retraining.RetrainLock(self.engine, self.spec.name):
            plan = retraining.arbitrate(self.ledger, self.spec.name, champion.tag, raw, self.rules, now=last)
            by_model = result.mae_by_model
            step = Step(
                start=day.isoformat(), end=last.isoformat(), rows=scored.rows_scored, champion=champion.tag,
                champion_mae=by_model.get(champion.tag), reference_mae=by_model.get(self.first),
                drifted_features=result.drifted_features, prediction_psi=result.prediction_psi,
                crossed=result.crossed, triggers=[t.name for t in plan.fired if t.fired], decision=plan.decision,
            )  # fmt: skip
            if plan.retrain:
                self.retrain(step, plan, champion, last)
        return step

    def retrain(self, step: Step, plan: retraining.Plan, champion: LoadedModel, last: date) -> None:
        """The arbitrated retrain, recorded in the copy's retrain_runs; the gate's decision into the step."""
        step.retrained, step.cause = True, plan.cause.name
        try:
            retraining.run_recorded(self.ledger, plan, champion, self.params_file, now=last, env=self.env,
                                    engine=self.engine)  # fmt: skip
        except retraining.PipelineStopped as stopped:
            step.reasons = [f"the pipeline stopped: {stopped}"]
            return
        decision = latest_decision(self.workdir) or {}
        step.candidate, step.reasons = decision.get("candidate"), decision.get("reasons", [])
        step.promoted = self.champion_tag() != champion.tag


def simulate(root: Path, workdir: Path, out: Path, start: date, end: date, step_days: int,
             overrides: dict[str, str]) -> Path:  # fmt: skip
    """Copy the project at `root` into `workdir`, replay [start, end] there, write the report to `out`."""
    prepare(root, workdir, start, overrides)
    replay = Replay(workdir)
    page = report(replay.run(start, end, step_days), out, replay.spec.target_label)
    replay.ledger.run_table(replay.spec.name).to_csv(out / "retrain_runs.csv", index=False)
    return page


# -- the report ----------------------------------------------------------------------------------


def chart(steps: pd.DataFrame, path: Path | None = None, label: str = "target") -> bytes:
    """Error per step: the champion vs the first model never retrained; retrains and promotions marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ends = pd.to_datetime(steps["end"])
    figure, (error, drift) = plt.subplots(2, 1, figsize=(10, 6.5), sharex=True, height_ratios=[3, 1.3])
    error.plot(ends, steps["reference_mae"], "o-", color="#9a9a9a", label="first model (trained before the replay), "
               "never retrained")  # fmt: skip
    error.plot(ends, steps["champion_mae"], "o-", color="#1f77b4", label="champion (retrained by the triggers)")
    promoted, refused = steps[steps["retrained"] & steps["promoted"]], steps[steps["retrained"] & ~steps["promoted"]]
    for number, row in enumerate(promoted.itertuples()):
        error.axvline(pd.Timestamp(row.end), color="#2ca02c", linestyle="--", linewidth=1.2,
                      label="retrained and promoted by the gate" if number == 0 else None)  # fmt: skip
    error.plot(pd.to_datetime(refused["end"]), refused["champion_mae"], "x", color="#d62728", markersize=10,
               markeredgewidth=2, linestyle="none", label="retrained, not promoted")  # fmt: skip
    error.set_ylabel(f"MAE ({label})")
    error.set_title("Replaying the hours step by step: production error of each step")
    error.legend(loc="upper right", fontsize=8)
    error.grid(alpha=0.3)
    drift.bar(ends, steps["drifted_features"].map(len), width=5, color="#ff7f0e",
              label="features flagged (at their calibrated limits)")  # fmt: skip
    psi = drift.twinx()
    psi.plot(ends, steps["prediction_psi"], "s-", color="#6a3d9a", markersize=4, label="prediction PSI")
    psi.set_ylabel("prediction PSI")
    drift.set_ylabel("drifted\nfeatures")
    drift.grid(alpha=0.3)
    drift.legend(loc="upper left", fontsize=8)
    psi.legend(loc="upper right", fontsize=8)
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    if path is not None:
        path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def report(steps: list[Step], out: Path, label: str = "target") -> Path:
    """steps.csv, chart.png and index.html in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame([asdict(step) for step in steps])
    frame.to_csv(out / "steps.csv", index=False)
    image = chart(frame, out / "chart.png", label)
    table = frame.assign(
        drifted_features=frame["drifted_features"].map(", ".join), crossed=frame["crossed"].map(", ".join),
        triggers=frame["triggers"].map(", ".join), reasons=frame["reasons"].map("; ".join),
    ).to_html(index=False, na_rep="", float_format=lambda v: f"{v:.2f}")  # fmt: skip
    retrains = frame[frame["retrained"]]
    summary = (f"{len(frame)} steps, {int(frame['rows'].sum())} hours scored; {len(retrains)} retrains, "
               f"{int(retrains['promoted'].sum())} promoted.")  # fmt: skip
    page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8"><title>Tiffin simulation</title>
<style>body{{font-family:sans-serif;margin:2em}} table{{border-collapse:collapse;font-size:12px}}
td,th{{border:1px solid #ccc;padding:3px 6px}}</style></head><body>
<h1>Simulation: replaying the hours as production would see them</h1><p>{summary}</p>
<img class="chart" alt="error per step" src="data:image/png;base64,{base64.b64encode(image).decode()}">
<h2>Steps</h2>{table}</body></html>
"""
    (out / "index.html").write_text(page, encoding="utf-8")
    return out / "index.html"
