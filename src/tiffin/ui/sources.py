"""What the pages show, read from where each thing lives: DVC, the model store, the champion file, the
database's batch tables and the monitoring reports. Read-only: nothing here creates or changes anything."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tiffin.lifecycle.promotion import decision_about
from tiffin.storage.champion import ChampionState, all_states, dataset_of
from tiffin.storage.modelstore import ModelStore

EXPERIMENT_COMMITS = 20  # the latest commits `dvc exp show` lists, each with its experiments
BATCH_RUNS = 200  # the latest runs the batch page lists
REJECT_EXAMPLES = 3  # example rows per (field, rule)


class Unavailable(Exception):
    """A source this server cannot read (no checkout, no database table yet): the page says why and how."""


# -- experiments (DVC) ---------------------------------------------------------------------------


@dataclass
class Run:
    """One row of `dvc exp show`: the workspace, a commit or an experiment, with params and metrics flattened."""

    rev: str  # the full revision (or "workspace")
    name: str  # the experiment's name, the short commit, or "workspace"
    kind: str  # workspace, commit or experiment
    baseline: str  # the commit an experiment started from (its own rev for a commit)
    timestamp: str | None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def apply_command(self) -> str | None:
        return f"dvc exp apply {self.name}" if self.kind == "experiment" else None


def flatten(prefix: str, value: Any, into: dict[str, Any]) -> None:
    """Nested dicts as dotted keys in `into` (params and metrics, for tables)."""
    if isinstance(value, dict):
        for key, inner in value.items():
            flatten(f"{prefix}.{key}" if prefix else str(key), inner, into)
    else:
        into[prefix] = value


def _files(section: dict | None) -> dict[str, Any]:
    """DVC's {file: {"data": {...}}} as {"file:key.sub": value} (the file named only when there are several)."""
    flat: dict[str, Any] = {}
    files = section or {}
    for path, content in files.items():
        flatten(f"{path}:" if len(files) > 1 else "", (content or {}).get("data") or {}, flat)
    return {key.replace(":.", ":"): value for key, value in flat.items()}


def _run(entry: dict, kind: str, baseline: str, name: str | None) -> Run:
    data = entry.get("data") or {}
    metrics = {k: v for k, v in _files(data.get("metrics")).items() if isinstance(v, int | float) and math.isfinite(v)}
    rev = entry.get("rev") or data.get("rev") or "workspace"
    shown = name or ("workspace" if rev == "workspace" else rev[:7])
    return Run(rev, shown, kind, baseline, data.get("timestamp"), _files(data.get("params")), metrics)


def parse_experiments(document: list[dict]) -> list[Run]:
    """`dvc exp show --json` (DVC 3) as runs: each commit, then the experiments that started from it."""
    runs = []
    for entry in document:
        rev = entry.get("rev", "workspace")
        runs.append(_run(entry, "workspace" if rev == "workspace" else "commit", rev, entry.get("name")))
        for experiment in entry.get("experiments") or []:
            for revision in experiment.get("revs") or []:
                name = experiment.get("name") or revision.get("name")
                runs.append(_run(revision, "experiment", rev, name))
    return runs


def _dvc(root: Path, *args: str) -> str:
    dvc = shutil.which("dvc")
    if dvc is None or not (root / "dvc.yaml").exists() or not (root / ".git").exists():
        raise Unavailable("experiments live in the project's git and DVC repository: run `tiffin ui` in a checkout")
    done = subprocess.run([dvc, *args], cwd=root, capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise Unavailable(f"`dvc {' '.join(args)}` failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def experiments(root: Path | None, commits: int = EXPERIMENT_COMMITS) -> list[Run]:
    """The workspace, the latest commits and every experiment from them, as `dvc exp show` lists them."""
    if root is None:
        raise Unavailable("experiments live in the project's git and DVC repository: run `tiffin ui` in a checkout")
    return parse_experiments(json.loads(_dvc(root, "exp", "show", "--json", "-n", str(commits)) or "[]"))


@dataclass
class Plot:
    """One plot of dvc.yaml's `plots:` as `dvc plots diff` gives it: its rows per revision."""

    title: str
    kind: str  # "scatter" (x and y numbers) or "bars" (a number per category)
    x: str
    y: str
    rows: dict[str, list[dict[str, Any]]]  # revision -> rows


def plots(root: Path | None, revisions: list[str]) -> list[Plot]:
    """The project's plots for `revisions` against the workspace: the data `dvc plots diff` uses."""
    if root is None:
        raise Unavailable("plots live in the project's DVC repository: run `tiffin ui` in a checkout")
    document = json.loads(_dvc(root, "plots", "diff", *revisions, "--json") or "{}")
    found = []
    for title, renderings in (document.get("data") or {}).items():
        for rendering in renderings:
            content = rendering.get("content") or {}
            encoding, mark = content.get("encoding") or {}, content.get("mark")
            if not mark or "field" not in encoding.get("x", {}) or "field" not in encoding.get("y", {}):
                continue  # a default line plot of a plots file: the named plots cover it
            x, y = encoding["x"]["field"], encoding["y"]["field"]
            kind = "bars" if encoding["y"].get("type") == "nominal" else "scatter"
            rows: dict[str, list[dict[str, Any]]] = {}
            for row in (content.get("data") or {}).get("values") or []:
                rows.setdefault(row.get("rev", "workspace"), []).append(row)
            found.append(Plot(title, kind, x, y, rows))
    return found


# -- models --------------------------------------------------------------------------------------


@dataclass
class ModelRow:
    tag: str
    dataset: str
    created: str
    role: str | None
    metadata: dict[str, Any]

    @property
    def test_metrics(self) -> dict[str, Any]:
        return (self.metadata.get("metrics") or {}).get("test") or {}


def _row(stored: Any, state: ChampionState | None) -> ModelRow:
    tag = str(stored.tag)
    return ModelRow(tag, dataset_of(tag), f"{stored.info.creation_time:%Y-%m-%d %H:%M}",
                    state.role_of(tag) if state else None, dict(stored.info.metadata))  # fmt: skip


def models(store: ModelStore) -> tuple[list[ModelRow], dict[str, ChampionState]]:
    """Every registered model, newest first, with its role; and each dataset's champion state."""
    states = {state.dataset: state for state in all_states()}
    return [_row(stored, states.get(dataset_of(str(stored.tag)))) for stored in store.list()], states


def model(store: ModelStore, tag: str) -> tuple[ModelRow, list[dict], dict | None]:
    """One model's lineage, the champion-file events naming it, and the gate's decision about it."""
    stored = store.get(tag)  # bentoml's NotFound for an unknown tag
    state = ChampionState.load(dataset=dataset_of(str(stored.tag)))
    row = _row(stored, state)
    events = [event for event in state.history if row.tag in (event.get("tag"), event.get("previous"))]
    return row, events, decision_about(row.tag, state)


# -- batch runs ----------------------------------------------------------------------------------

RUNS_TABLE, REJECTS_TABLE, WATERMARKS_TABLE = "batch_runs", "prediction_rejects", "batch_watermarks"
_REJECT_COLUMNS = ("field", "model", "value", "rule", "run_id", "rejected_at", "row_hash")


def _reflected(engine: Engine, name: str) -> sa.Table | None:
    if not sa.inspect(engine).has_table(name):
        return None
    return sa.Table(name, sa.MetaData(), autoload_with=engine)


def _records(connection: sa.Connection, query: sa.Select) -> list[dict[str, Any]]:
    return [dict(row._mapping) for row in connection.execute(query)]


@dataclass
class Batch:
    runs: list[dict[str, Any]]
    rejects: list[dict[str, Any]]  # per (field, rule): count, models, examples
    watermarks: list[dict[str, Any]]


def batch(engine: Engine) -> Batch:
    """The runs ledger (newest first), the rejects grouped by field and rule with examples, the watermarks."""
    runs_table = _reflected(engine, RUNS_TABLE)
    if runs_table is None:
        raise Unavailable("no batch run yet: `tiffin batch --since-last` scores the source table and records its run")
    rejects_table, watermarks_table = _reflected(engine, REJECTS_TABLE), _reflected(engine, WATERMARKS_TABLE)
    with engine.connect() as connection:
        runs = _records(connection, sa.select(runs_table).order_by(runs_table.c.started_at.desc()).limit(BATCH_RUNS))
        watermarks = _records(connection, sa.select(watermarks_table)) if watermarks_table is not None else []
        rejects = _grouped_rejects(connection, rejects_table) if rejects_table is not None else []
    return Batch(runs, rejects, watermarks)


def _grouped_rejects(connection: sa.Connection, table: sa.Table) -> list[dict[str, Any]]:
    latest = sa.func.max(table.c.rejected_at).label("latest")
    counts = sa.select(table.c.field, table.c.rule, sa.func.count().label("rows"), latest)
    counts = counts.group_by(table.c.field, table.c.rule)
    keys = [column.name for column in table.columns if column.name not in _REJECT_COLUMNS]
    groups = []
    for group in _records(connection, counts.order_by(sa.desc("rows"), table.c.field)):
        where = (table.c.field == group["field"]) & (table.c.rule == group["rule"])
        query = sa.select(table).where(where).order_by(table.c.rejected_at.desc()).limit(REJECT_EXAMPLES)
        examples = [{"key": ", ".join(str(row[k]) for k in keys), "value": row["value"], "model": row["model"]}
                    for row in _records(connection, query)]  # fmt: skip
        groups.append({**group, "examples": examples})
    return groups


# -- monitoring ----------------------------------------------------------------------------------


@dataclass
class Window:
    """One `tiffin monitor` run: its window and figures (the run's metrics.json)."""

    document: dict[str, Any]

    @property
    def start(self) -> str:
        return str(self.document["window"]["start"])


def monitoring(reports: Path) -> list[Window]:
    """Every monitoring run under `reports` (one folder per window), oldest window first."""
    windows = []
    for path in sorted(reports.glob("*/metrics.json")) if reports.is_dir() else []:
        if path.parent.name == "latest" or path.parent.name.startswith("."):
            continue
        try:
            windows.append(Window(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, KeyError):
            continue  # a run being written or a foreign file: not one of ours
    if not windows:
        raise Unavailable("no monitoring run yet: `tiffin monitor --start ... --end ...` writes one per window")
    return sorted(windows, key=lambda window: window.start)
