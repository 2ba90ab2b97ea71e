"""When to retrain, and how: four triggers, then `dvc repro` with the training window moved forward.

- new data: hours of data per series in the source table after the champion's training window (params
  `retrain.min_new_hours`; the median over the spec's series, so 21 sensors do not make 32 hours look like 4 weeks);
- schedule: the champion's data is older than `retrain.max_age_days` (its window end vs now);
- metric drop: its production MAE over the last `retrain.metric_window_days` (prediction log joined with
  the actual values that have arrived) is above `retrain.max_mae_ratio` x its test MAE;
- request: `--force`.

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
from tiffin.storage.database import Window, source_table, window_span
from tiffin.storage.modelstore import LoadedModel

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
    if outcome.get("params"):
        lines += ["Params moved: " + ", ".join(f"`{k}` = {v}" for k, v in outcome["params"].items()), ""]
    if "blessed" in outcome:
        verdict = "promoted to champion" if outcome["blessed"] else "not promoted"
        lines += [f"Candidate `{outcome.get('candidate')}`: **{verdict}**", ""]
        lines += [f"- {reason}" for reason in outcome["reasons"]]
    elif not outcome["retrain"]:
        lines += ["No trigger fired: nothing retrained."]
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
