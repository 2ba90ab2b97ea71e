"""The pages: a Starlette app over `sources`, rendered with `templates`. Every view is a GET whose state is in
its URL (sort, order, filter), so a reload or a shared link shows the same page."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from bentoml.exceptions import NotFound
from jinja2 import Environment, FileSystemLoader
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route

from tiffin.storage import database, settings
from tiffin.storage.modelstore import ModelStore
from tiffin.ui import charts, sources

# Autoescaped: every value from a source is text, never markup. The files travel with the package (and the Bento's
# `include`), so the Bento serves the same pages as `tiffin ui`.
ENVIRONMENT = Environment(loader=FileSystemLoader(Path(__file__).with_name("templates")), autoescape=True)
NAV = [("/experiments", "Experiments"), ("/models", "Models"), ("/batch", "Batch"), ("/monitoring", "Monitoring")]
DEFAULT_METRIC = "mae"
MOUNT_PATH = "/ui"
ROUTES = [MOUNT_PATH, f"{MOUNT_PATH}/", *(MOUNT_PATH + href for href, _ in NAV)]  # what /metrics may label by path


@dataclass
class Sources:
    """Where the pages read: the checkout (None in a Bento: no experiments there), the database, the store,
    the monitoring reports, and the path the app is mounted at (for links) and the dashboard's."""

    root: Path | None
    db_url: str | None
    reports: Path
    base: str = ""
    dashboard: str = "/dashboard/"
    store_home: Path | None = None

    def engine(self) -> Any:
        if self.db_url is None:
            raise sources.Unavailable("no database is set: TIFFIN_DB_URL names the one the batch runner writes")
        return self._engine

    @cached_property
    def _engine(self) -> Any:
        return database.engine_for(self.db_url, must_exist=True)

    def store(self) -> ModelStore:
        return ModelStore(self.store_home)


def _page(config: Sources, template: str, title: str, here: str = "", status: int = 200, **values: Any) -> Response:
    html = ENVIRONMENT.get_template(f"{template}.html").render(
        title=title, nav=NAV, here=here, base=config.base, dashboard=config.dashboard, **values
    )
    return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})


def build(config: Sources) -> Starlette:
    """The interface's ASGI app; mount it (the Bento: at /ui) or serve it alone (`tiffin ui`)."""

    def index(request: Request) -> Response:
        try:
            _, states = sources.models(config.store())
        except Exception as error:  # a store that cannot be read still leaves the links
            return _page(config, "index", "Tiffin", states={}, unavailable=str(error))
        return _page(config, "index", "Tiffin", states=states)

    routes = [
        Route("/", index),
        Route("/experiments", lambda request: experiments_page(config, request)),
        Route("/experiments/{name}", lambda request: experiment_page(config, request)),
        Route("/models", lambda request: models_page(config)),
        Route("/models/{tag}", lambda request: model_page(config, request.path_params["tag"])),
        Route("/batch", lambda request: batch_page(config)),
        Route("/monitoring", lambda request: monitoring_page(config)),
    ]
    # Plain functions: Starlette runs them on a thread, since they read files, the database and DVC.
    return Starlette(routes=routes)


# -- experiments ---------------------------------------------------------------------------------


def _sorted_runs(runs: list[sources.Run], sort: str, order: str) -> list[sources.Run]:
    having = [run for run in runs if sort in run.metrics]
    rest = [run for run in runs if sort not in run.metrics]
    return sorted(having, key=lambda run: run.metrics[sort], reverse=order == "desc") + rest


def _default_metric(names: list[str]) -> str:
    preferred = [name for name in names if name.endswith(f"test.{DEFAULT_METRIC}") and "baseline" not in name]
    return (preferred or names or [""])[0]


def experiments_page(config: Sources, request: Request) -> Response:
    params = request.query_params
    kind, q = params.get("kind", "all"), params.get("q", "").strip()
    try:
        runs = sources.experiments(config.root)
    except sources.Unavailable as reason:
        return _page(config, "experiments", "Experiments", "/experiments", runs=None, unavailable=str(reason))
    # Test metrics first, then the rest; baselines last: the columns people sort by come first.
    metric_names = sorted({name for run in runs for name in run.metrics}, key=_column_order)
    param_names = sorted({name for run in runs for name, value in run.params.items() if _varies(runs, name)})
    sort = params.get("sort") or _default_metric(metric_names)
    order = "desc" if params.get("order") == "desc" else "asc"
    shown = [run for run in runs if kind == "all" or run.kind == kind or (kind == "commit" and run.kind == "workspace")]
    if q:
        shown = [run for run in shown if q.lower() in f"{run.name} {run.rev} {run.params}".lower()]
    low, high = _bound(params.get("min")), _bound(params.get("max"))
    if low is not None or high is not None:  # a range of the sorted metric: runs without it are left out
        shown = [run for run in shown if sort in run.metrics and (low is None or run.metrics[sort] >= low)
                 and (high is None or run.metrics[sort] <= high)]  # fmt: skip
    shown = _sorted_runs(shown, sort, order)
    best = shown[0] if shown and sort in shown[0].metrics else None

    def query(**changes: str) -> str:
        bounds = {name: params[name] for name in ("min", "max") if params.get(name)}
        return urlencode({"kind": kind, "q": q, "sort": sort, "order": order} | bounds | changes)

    return _page(config, "experiments", "Experiments", "/experiments", runs=shown, metric_names=metric_names,
                 param_names=param_names, sort=sort, order=order, kind=kind, q=q, best=best, query=query,
                 low=params.get("min", ""), high=params.get("max", ""),
                 commits=sources.EXPERIMENT_COMMITS)  # fmt: skip


def _bound(text: str | None) -> float | None:
    try:
        return float(text) if text not in (None, "") else None
    except ValueError:
        return None  # not a number: no bound, as if left empty


def _column_order(metric: str) -> tuple[bool, bool, str]:
    return "baseline" in metric, ".test." not in "." + metric.replace(":", "."), metric


def _varies(runs: list[sources.Run], name: str) -> bool:
    """A param worth a column: one that differs between runs (the rest is the same everywhere)."""
    return len({repr(run.params.get(name)) for run in runs}) > 1


def experiment_page(config: Sources, request: Request) -> Response:
    name = request.path_params["name"]
    try:
        runs = sources.experiments(config.root)
    except sources.Unavailable as reason:
        return _page(config, "experiment", name, "/experiments", run=None, unavailable=str(reason))
    run = next((r for r in runs if name in (r.name, r.rev)), None)
    workspace = next((r for r in runs if r.kind == "workspace"), None)
    if run is None:
        return _page(config, "experiment", name, "/experiments", run=None, status=404,
                     unavailable=f"no experiment or commit named {name!r} among the latest runs")  # fmt: skip
    compared = [*sorted(set(run.metrics) | set(workspace.metrics if workspace else {})),
                *sorted(k for k in set(run.params) | set(workspace.params if workspace else {})
                        if workspace is None or run.params.get(k) != workspace.params.get(k))]  # fmt: skip
    charts_, unavailable = [], None
    try:
        found = sources.plots(config.root, [run.rev]) if run.kind != "workspace" else []
    except sources.Unavailable as reason:
        found, unavailable = [], str(reason)
    names = [run.rev, "workspace"]
    for plot in found:
        charts_.append({"title": plot.title, "svg": _plot_svg(plot, names)})

    def shown(which: sources.Run | None, key: str) -> str:
        if which is None:
            return ""
        value = which.metrics.get(key, which.params.get(key, ""))
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    return _page(config, "experiment", f"Run {run.name}", "/experiments", run=run, workspace=workspace,
                 compared=compared, shown=shown, charts=charts_, plots_unavailable=unavailable,
                 plot_legend=charts.legend([run.name, "workspace"]))  # fmt: skip


def _plot_svg(plot: sources.Plot, revisions: list[str]) -> Any:
    present = [rev for rev in revisions if rev in plot.rows] + [rev for rev in plot.rows if rev not in revisions]
    if plot.kind == "scatter":
        return charts.scatter({rev: [(row.get(plot.x), row.get(plot.y)) for row in plot.rows[rev]] for rev in present},
                              plot.title)  # fmt: skip
    categories = list(dict.fromkeys(row.get(plot.y) for rev in present for row in plot.rows[rev]))
    series = {rev: [next((row.get(plot.x) for row in plot.rows[rev] if row.get(plot.y) == c), None)
                    for c in categories] for rev in present}  # fmt: skip
    return charts.bars([str(c) for c in categories], series, plot.title)


# -- models --------------------------------------------------------------------------------------


def models_page(config: Sources) -> Response:
    rows, states = sources.models(config.store())
    by_dataset: dict[str, list[sources.ModelRow]] = {}
    for row in rows:
        by_dataset.setdefault(row.dataset, []).append(row)
    unavailable = None if rows else "no registered model yet: `make repro` trains and registers one"
    return _page(config, "models", "Models", "/models", by_dataset=by_dataset, states=states, unavailable=unavailable)


def model_page(config: Sources, tag: str) -> Response:
    try:
        row, events, decision = sources.model(config.store(), tag)
    except NotFound:
        return _page(config, "model", tag, "/models", row=None, status=404,
                     unavailable=f"no model {tag!r} in the model store")  # fmt: skip
    metric = (decision or {}).get("rules", {}).get("metric", DEFAULT_METRIC)
    metrics: dict[str, Any] = {}
    sources.flatten("", row.metadata.get("metrics") or {}, metrics)
    params: dict[str, Any] = {}
    sources.flatten("", row.metadata.get("params") or {}, params)
    slice_chart = None
    if decision and decision.get("slices"):
        labels = [f"{s['slice']}={s['segment']}" for s in decision["slices"]]
        series = {"candidate": [s.get(f"candidate_{metric}") for s in decision["slices"]]}
        if any(f"champion_{metric}" in s for s in decision["slices"]):
            series["champion"] = [s.get(f"champion_{metric}") for s in decision["slices"]]
        slice_chart = charts.legend(list(series)) + charts.bars(labels, series, f"{metric} per slice")
    return _page(config, "model", row.tag, "/models", row=row, events=events, decision=decision, metric=metric,
                 metrics=sorted(metrics.items()), params=sorted(params.items()), slice_chart=slice_chart)  # fmt: skip


# -- batch and monitoring ------------------------------------------------------------------------


def batch_page(config: Sources) -> Response:
    try:
        data = sources.batch(config.engine())
    except sources.Unavailable as reason:
        return _page(config, "batch", "Batch runs", "/batch", data=None, unavailable=str(reason))
    latest = list(reversed(data.runs[:30]))
    runs_chart = charts.legend(["scored", "rejected"]) + charts.bars(
        [f"{run['window_start']} .. {run['window_end']}" for run in latest],
        {"scored": [run["rows_scored"] for run in latest], "rejected": [run["rows_rejected"] for run in latest]},
        "rows per run",
    )
    return _page(config, "batch", "Batch runs", "/batch", data=data, runs_chart=runs_chart)


def monitoring_page(config: Sources) -> Response:
    try:
        windows = sources.monitoring(config.reports)
    except sources.Unavailable as reason:
        return _page(config, "monitoring", "Monitoring", "/monitoring", windows=None, unavailable=str(reason))
    metric = DEFAULT_METRIC
    starts = [window.start[:10] for window in windows]
    by_slice: dict[str, list[Any]] = {}
    for i, window in enumerate(windows):
        for row in (window.document.get("performance") or {}).get("by_slice") or []:
            if row.get("role", "champion") != "champion":
                continue
            name = f"{row.get('slice')}={row.get('segment')}"
            by_slice.setdefault(name, [None] * len(windows))[i] = row.get(metric)
    duel: dict[str, list[Any]] = {}
    for i, window in enumerate(windows):
        for row in (window.document.get("performance") or {}).get("by_model") or []:
            duel.setdefault(str(row.get("role")), [None] * len(windows))[i] = row.get(metric)
    has_duel = "challenger" in duel
    return _page(config, "monitoring", "Monitoring", "/monitoring", windows=windows, metric=metric,
                 slice_legend=charts.legend(list(by_slice)), slice_chart=charts.lines(starts, by_slice, "per slice"),
                 duel_legend=charts.legend(list(duel)) if has_duel else None,
                 duel_chart=charts.lines(starts, duel, "champion and challenger") if has_duel else None)  # fmt: skip


def from_environment(root: Path | None, base: str = "") -> Sources:
    """The sources as this process is configured: TIFFIN_DB_URL (or the project's default), the reports folder."""
    from tiffin.serving.dashboard import reports_dir

    try:
        db_url = settings.db_url()
    except settings.DatabaseNotSet:
        db_url = None
    reports = reports_dir()
    if not reports.is_absolute() and root is not None:
        reports = root / reports
    return Sources(root, db_url, reports, base=base, dashboard=settings.env("TIFFIN_DASHBOARD_URL"))


def mount(service: Any) -> None:
    """Serve the interface at /ui/ of a BentoML service (behind its token, like every route but the probes)."""
    service.mount_asgi_app(build(from_environment(root=None, base=MOUNT_PATH)), path=MOUNT_PATH, name="ui")


def standalone(root: Path | None) -> Starlette:
    """`tiffin ui`: the interface at / and the monitoring dashboard beside it at /dashboard/, as in the Bento."""
    from starlette.routing import Mount

    from tiffin.serving import dashboard

    return Starlette(routes=[Mount(dashboard.MOUNT_PATH, dashboard.app), Mount("", build(from_environment(root)))])
