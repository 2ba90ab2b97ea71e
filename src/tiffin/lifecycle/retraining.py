"""When to retrain, and how: four triggers, then `dvc repro` with the training window moved forward.

- new data: hours of data per series in the source table after the champion's training window (params
  `retrain.min_new_hours`; the median over the spec's series, so 21 sensors do not make 32 hours look like 4 weeks);
- schedule: the champion's data is older than `retrain.max_age_days` (its window end vs now);
- metric drop: its production MAE over the last `retrain.metric_window_days` (prediction log joined with
  the actual values that have arrived) is above `retrain.max_mae_ratio` x its test MAE;
- request: `--force`.

Arbitration (`arbitrate`, `run_recorded`): one retrain at a time per dataset (`RetrainLock`, the batch runner's
lock: a PostgreSQL advisory lock or a lock file beside the SQLite file); the metric drop counts only when it has
held for `retrain.metric_checks` consecutive checks of the same champion; no retrain within
`retrain.cooldown_days` of the last one, unless requested; every run is recorded in `retrain_runs` with the trigger
that caused it (request before metric drop before schedule before new data), its status and times.

Retraining moves `ingest.end` to the last complete day in the source and the split dates by the same
number of days (the holdout stays the latest period), then runs `dvc repro`: the promotion gate
(the bless stage) decides whether the new model becomes champion.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tiffin.core.contract import Contract
from tiffin.core.params import Retrain as RetrainRules
from tiffin.core.spec import DatasetSpec
from tiffin.lifecycle import monitoring
from tiffin.lifecycle.promotion import latest_decision
from tiffin.storage import retrain_ledger
from tiffin.storage.database import Window, source_table, window_span
from tiffin.storage.locks import Busy, ProcessLock
from tiffin.storage.modelstore import LoadedModel
from tiffin.storage.retrain_ledger import RetrainLedger
from tiffin.storage.settings import load_params

SPLIT_DATES = ("validation_start", "test_start")


@dataclass(frozen=True)
class Trigger:
    name: str
    fired: bool
    detail: str


def _day(value: object) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def latest_day(engine: Engine, spec: DatasetSpec) -> date | None:
    """The last day in the source table (on the spec's window column)."""
    _, last = window_span(engine, spec)
    return None if last is None else _day(last)


@dataclass(frozen=True)
class NewData:
    rows: int
    series: int  # distinct series among the new rows (1 for a spec without series)
    hours: int  # distinct event hours per series: the median over the series

    def __str__(self) -> str:
        per = f" per series (median of {self.series})" if self.series > 1 else ""
        return f"{self.hours} hours of data{per}, {self.rows} rows,"


def new_data_after(engine: Engine, spec: DatasetSpec, day: date) -> NewData:
    """What arrived after `day`, measured in hours of event time per series (only the time and series columns
    are read, and read the way the contract reads them)."""
    table = source_table(engine, spec)
    names = list(dict.fromkeys([*spec.timestamp.columns, *spec.series]))
    after = (day + timedelta(days=1)).isoformat()
    query = sa.select(*(table.c[name] for name in names)).where(
        *Window.parse(after, None).conditions(table.c[spec.source.window_column])
    )
    with engine.connect() as connection:
        raw = pd.DataFrame(connection.execute(query).all(), columns=names)
    if raw.empty:
        return NewData(0, 0, 0)
    canonical, _ = Contract(spec).normalise(raw, names)
    hours = canonical.assign(_hour=spec.event_time(canonical).dt.floor("h")).dropna(subset=["_hour"])
    per_series = (
        hours.groupby(spec.series, dropna=False)["_hour"].nunique() if spec.series else hours["_hour"].nunique()
    )
    counts = pd.Series(per_series).to_numpy()
    return NewData(rows=len(raw), series=len(counts), hours=int(np.median(counts)) if len(counts) else 0)


def triggers(
    *,
    trained_until: date,
    now: date,
    new_data: NewData,
    production_mae: float | None,
    production_rows: int,
    test_mae: float,
    rules: RetrainRules,
    force: bool,
) -> list[Trigger]:
    """Which of the four triggers fire; each says why (or why not)."""
    age = (now - trained_until).days
    metric = Trigger("metric_drop", False, f"only {production_rows} scored rows with actuals in the last "
                     f"{rules.metric_window_days} days (needs {rules.min_metric_rows})")  # fmt: skip
    if production_mae is not None and production_rows >= rules.min_metric_rows:
        ratio = production_mae / test_mae
        metric = Trigger("metric_drop", ratio > rules.max_mae_ratio,
                         f"production MAE {production_mae:.2f} = {ratio:.2f} x test MAE {test_mae:.2f} "
                         f"(limit {rules.max_mae_ratio})")  # fmt: skip
    return [
        Trigger("new_data", new_data.hours >= rules.min_new_hours,
                f"{new_data} after {trained_until} (threshold {rules.min_new_hours} hours)"),
        Trigger("schedule", age > rules.max_age_days,
                f"the champion's data ends {trained_until}, {age} days ago (limit {rules.max_age_days})"),
        metric,
        Trigger("request", force, "--force" if force else "not requested"),
    ]  # fmt: skip


def moved_window(params: dict[str, Any], new_end: date, rules: RetrainRules) -> dict[str, str]:
    """The params to change (dotted names): ingest.end to `new_end`; date splits so that the test and
    validation periods are the latest `holdout_days` and the `validation_days` before, and training
    gets everything earlier. (Share-based splits move with the window by themselves.)"""
    changes = {"ingest.end": new_end.isoformat()}
    if all(name in (params.get("split") or {}) for name in SPLIT_DATES):
        test_start = new_end - timedelta(days=rules.holdout_days - 1)
        changes["split.test_start"] = test_start.isoformat()
        changes["split.validation_start"] = (test_start - timedelta(days=rules.validation_days)).isoformat()
    return changes


def update_params(path: Path, changes: dict[str, str]) -> None:
    """Set dotted params in params.yaml, keeping its comments and layout (ruamel, as DVC itself does)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    document = yaml.load(path.read_text())
    for dotted, value in changes.items():
        *sections, key = dotted.split(".")
        node = document
        for section in sections:
            node = node[section]
        node[key] = value
    with path.open("w") as out:
        yaml.dump(document, out)


class PipelineStopped(RuntimeError):
    """`dvc repro` failed: a stage refused (e.g. the model does not beat the naive baseline)."""


def run_dvc_repro(cwd: Path | None = None, env: dict[str, str] | None = None) -> str:
    """`dvc repro` in the project: ingest the moved window, validate, train, evaluate, register, bless.

    `env`: the stages' environment (a project copy's own database and model store), else this one's."""
    done = subprocess.run(["dvc", "repro"], cwd=cwd, env=env, capture_output=True, text=True)
    output = done.stdout + done.stderr
    if done.returncode != 0:
        errors = [line for line in output.splitlines() if "ERROR" in line] or output.splitlines()[-3:]
        raise PipelineStopped("; ".join(errors))
    return output


def markdown(triggers: list[dict[str, Any]], outcome: dict[str, Any]) -> str:
    """The retraining report (a pull request's body)."""
    lines = ["## Retraining triggers", "", "| trigger | fired | why |", "|---|---|---|"]
    lines += [f"| {t['trigger']} | {'**yes**' if t['fired'] else 'no'} | {t['detail']} |" for t in triggers]
    lines += ["", f"Champion before: `{outcome['champion']}`", ""]
    if outcome.get("cause"):
        lines += [f"Retrained for: **{outcome['cause']}** (run `{outcome.get('run_id')}` in retrain_runs)", ""]
    if outcome.get("params"):
        lines += ["Params moved: " + ", ".join(f"`{k}` = {v}" for k, v in outcome["params"].items()), ""]
    if "blessed" in outcome:
        verdict = "promoted to champion" if outcome["blessed"] else "not promoted"
        lines += [f"Candidate `{outcome.get('candidate')}`: **{verdict}**", ""]
        lines += [f"- {reason}" for reason in outcome["reasons"]]
    elif not outcome["retrain"]:
        lines += [f"Nothing retrained: {outcome.get('decision') or 'no trigger fired'}."]
    return "\n".join(lines) + "\n\n"


def production_error(engine: Engine, spec: DatasetSpec, model: str, until: date, days: int) -> tuple[float | None, int]:
    """The model's MAE over the last `days` days up to `until`, from the prediction log and the actuals."""
    start, end = (until - timedelta(days=days - 1)).isoformat(), until.isoformat()
    logged = monitoring.read_log(engine, spec, start, end)
    performance = monitoring.performance(logged[logged["model"] == model], monitoring.actuals(engine, spec, start, end),
                                         spec) if len(logged) else None  # fmt: skip
    overall = performance.of(model) if performance else None
    return (overall["mae"], overall["rows"]) if overall else (None, 0)


def check(engine: Engine, champion: LoadedModel, rules: RetrainRules, *, now: date, force: bool) -> list[Trigger]:
    """The four triggers for the champion against the source database today."""
    spec = champion.spec
    trained_until = _day(champion.metadata["params"]["ingest"]["end"])
    latest = latest_day(engine, spec) or trained_until
    mae, rows = production_error(engine, spec, champion.tag, latest, rules.metric_window_days)
    return triggers(
        trained_until=trained_until, now=now, new_data=new_data_after(engine, spec, trained_until),
        production_mae=mae, production_rows=rows, test_mae=champion.metadata["metrics"]["test"]["mae"],
        rules=rules, force=force,
    )  # fmt: skip


def retrain(engine: Engine, spec: DatasetSpec, params_file: Path, params: dict[str, Any],
            env: dict[str, str] | None = None) -> dict[str, str]:  # fmt: skip
    """Move the training window to the source's last day, then `dvc repro` (in `env`, see `run_dvc_repro`) in the
    project of `params_file`; returns the params changed. Raises PipelineStopped when a stage refuses; the
    champion is then unchanged."""
    new_end = latest_day(engine, spec)
    if new_end is None:
        raise LookupError(f"{spec.source.table} is empty: nothing to train on")
    rules = RetrainRules.from_params(params.get("retrain"))
    changes = moved_window(params, new_end, rules) if new_end > _day(params["ingest"]["end"]) else {}
    if changes:
        update_params(params_file, changes)
    run_dvc_repro(params_file.parent, env)
    return changes


# -- arbitration: one at a time, a cooldown, a metric trend, a record per run -------------------------

CAUSE_ORDER = ("request", "metric_drop", "schedule", "new_data")  # the cause a run is recorded under


class RetrainBusy(Busy):
    """Another retrain of this dataset is running."""


class RetrainLock(ProcessLock):
    """One retrain at a time per dataset: it rewrites params.yaml and runs `dvc repro` in the project."""

    busy, what = RetrainBusy, "another retrain is running for"

    def __init__(self, engine: Engine, dataset: str) -> None:
        super().__init__(engine, "retrain", dataset)


@dataclass(frozen=True)
class Plan:
    fired: list[Trigger]  # the triggers, the metric drop judged over consecutive checks
    cause: Trigger | None  # the trigger a retrain is recorded under (None: no retrain)
    held: str | None  # why fired triggers do not retrain now (the cooldown)

    @property
    def retrain(self) -> bool:
        return self.cause is not None

    @property
    def decision(self) -> str:
        if self.cause is not None:
            return f"retrain ({self.cause.name})"
        return self.held or "no trigger fired"


def _metric_over_checks(raw: Trigger, streak: int, rules: RetrainRules) -> Trigger:
    """The metric drop as a trend: over the limit at this check and the `metric_checks - 1` before it."""
    held = streak + 1 if raw.fired else 0
    detail = f"{raw.detail}; over the limit at {held} consecutive checks (needs {rules.metric_checks})"
    return Trigger(raw.name, held >= rules.metric_checks, detail)


def _cooldown(ledger: RetrainLedger, dataset: str, now: date, rules: RetrainRules) -> str | None:
    last = ledger.last_run(dataset)
    if last is None or rules.cooldown_days == 0:
        return None
    since = (now - _day(last.as_of)).days
    if since >= rules.cooldown_days:
        return None
    return (f"cooldown: the last retrain ({last.trigger}, {last.status}) judged by {_day(last.as_of)}, {since} days "
            f"before {now} (cooldown {rules.cooldown_days} days)")  # fmt: skip


def arbitrate(ledger: RetrainLedger, dataset: str, champion: str, raw: list[Trigger], rules: RetrainRules, *,
              now: date, record: bool = True) -> Plan:  # fmt: skip
    """Whether to retrain now, and under which cause; with `record`, the check goes into `retrain_checks` (a dry
    run records nothing). Call with the RetrainLock held, so that two checks never interleave."""
    raw_metric = next(t for t in raw if t.name == "metric_drop")
    streak = ledger.metric_streak(dataset, champion)
    fired = [_metric_over_checks(t, streak, rules) if t.name == "metric_drop" else t for t in raw]
    firing = {t.name: t for t in fired if t.fired}
    cause = next((firing[name] for name in CAUSE_ORDER if name in firing), None)
    held = None
    if cause is not None and cause.name != "request":
        held = _cooldown(ledger, dataset, now, rules)
        cause = None if held else cause
    plan = Plan(fired, cause, held)
    if record:
        ledger.record_check(dataset, champion, now, raw_metric.fired, list(firing), plan.decision)
    return plan


def run_recorded(ledger: RetrainLedger, plan: Plan, champion: LoadedModel, params_file: Path, *, now: date,
                 env: dict[str, str] | None = None, engine: Engine) -> dict[str, Any]:  # fmt: skip
    """`retrain`, recorded in `retrain_runs` from start to outcome; returns the outcome (params moved, candidate,
    blessed, reasons). Raises PipelineStopped (recorded as failed) when a stage refuses."""
    assert plan.cause is not None
    fired = [t.name for t in plan.fired if t.fired]
    run_id = ledger.start(champion.spec.name, plan.cause.name, fired, plan.cause.detail, now, champion.tag)
    try:
        changes = retrain(engine, champion.spec, params_file, load_params(params_file), env)
    except BaseException as stopped:  # recorded whatever stopped it (a refusing stage, Ctrl-C), then raised
        ledger.finish(run_id, retrain_ledger.FAILED, error=f"{type(stopped).__name__}: {stopped}")
        raise
    decision = latest_decision(params_file.parent) or {}
    candidate = decision.get("candidate")
    blessed = bool(decision.get("blessed")) and candidate != champion.tag
    ledger.finish(run_id, retrain_ledger.PROMOTED if blessed else retrain_ledger.NOT_PROMOTED, candidate)
    return {"run_id": run_id, "cause": plan.cause.name, "params": changes,
            **{k: decision.get(k) for k in ("candidate", "blessed", "reasons")}}  # fmt: skip
