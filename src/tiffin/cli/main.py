"""`tiffin`: the project's command line."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from tiffin.cli import exits
from tiffin.core import exitcodes
from tiffin.core.config_errors import ConfigError
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage import paths, settings
from tiffin.storage.settings import load_params


def _spec(path: str | None) -> tuple[DatasetSpec, str]:
    """The spec given, else the one params.yaml names."""
    path = path or load_params()["spec"]
    return load_spec(path), path


spec_option = click.option(
    "--spec",
    "spec_path",
    type=click.Path(exists=True, dir_okay=False),
    help="Dataset spec (default: the one params.yaml names).",
)


def _database(ctx: click.Context, param: click.Parameter | None, value: str | None) -> str:
    try:
        return settings.db_url(value)
    except settings.DatabaseNotSet as missing:
        raise click.UsageError(str(missing), ctx) from None


DB_HELP = f"SQLAlchemy URL of the source database [env TIFFIN_DB_URL; in a checkout: {settings.DEFAULT_DB_URL}]."
db_option = click.option("--db", "db", envvar="TIFFIN_DB_URL", callback=_database, help=DB_HELP)


class _Tiffin(click.Group):
    """The command group: a wrong spec or params file is the user's to fix, so it is shown as a message
    (file, key, what is allowed) and exit 2, never as a traceback."""

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except ConfigError as wrong:
            problem = click.ClickException(str(wrong))
            problem.exit_code = exitcodes.USAGE
            raise problem from None


@click.group(cls=_Tiffin)
@click.version_option(package_name="tiffin")
def main() -> None:
    """Tiffin: versioned data to a released, load-tested model service."""


@main.group()
def db() -> None:
    """The source database."""


@db.command("seed", epilog=exits.epilog("tiffin db seed"))
@spec_option
@db_option
@click.option(
    "--file",
    "seed_file",
    type=click.Path(exists=True, dir_okay=False),
    help="Raw rows to load (CSV, .csv.gz or Parquet; default: the spec's source.seed_file).",
)
@click.option(
    "--until",
    type=click.DateTime(["%Y-%m-%d", "%Y-%m-%dT%H:%M", "%Y-%m-%d %H:%M"]),
    help="Load only rows whose time is at or before this moment (to replay later hours).",
)
@click.option("--if-empty", is_flag=True, help="Do nothing if the table already has rows.")
@click.option(
    "--rejects",
    "rejects_path",
    type=click.Path(dir_okay=False),
    help="Where to write the later copies of keys the file repeats [default: data/rejects/seed_<table>.csv].",
)
@click.option("--strict", is_flag=True, help="Load nothing and exit 1 if the file repeats a key.")
def db_seed(
    spec_path: str | None,
    db: str,
    seed_file: str | None,
    until: datetime | None,
    if_empty: bool,
    rejects_path: str | None,
    strict: bool,
) -> None:
    """Load raw rows, as they are, into the source table. Idempotent: existing keys are skipped.

    A key the file repeats (compared as the contract reads it: '6am' is hour 6) is loaded from its first row;
    each later copy is written to the rejects CSV with its row, the key and the row that was kept.
    """
    from tiffin.core.contract import Contract
    from tiffin.storage import database

    spec, _ = _spec(spec_path)
    engine = database.engine_for(db)
    if if_empty and database.count_rows(engine, spec):
        click.echo(f"{spec.source.table}: {database.count_rows(engine, spec)} rows already, nothing to do")
        return
    seed_file = seed_file or spec.source.seed_file
    if not seed_file:
        raise click.UsageError("the spec has no source.seed_file: pass --file")
    raw = database.read_seed_file(seed_file)
    contract = Contract(spec)
    canonical, _ = contract.normalise(raw, list(dict.fromkeys([*spec.key, *spec.timestamp.columns])))  # once
    held_back = contract.held_back(raw, until, canonical) if until else None
    result = database.seed(
        engine, spec, raw, held_back=held_back, canonical_keys=canonical[spec.key], refuse_duplicates=strict
    )
    table, duplicates = spec.source.table, len(result.duplicates)
    rejects = Path(rejects_path or f"data/rejects/seed_{table}.csv")
    if duplicates:  # nothing dropped unsaid: every copy left out is in this file
        rejects.parent.mkdir(parents=True, exist_ok=True)
        result.duplicates.to_csv(rejects, index=False)
    if result.refused:
        click.echo(
            f"{table}: nothing loaded (--strict): {duplicates} duplicate keys within the file (rejects in {rejects})"
        )
        sys.exit(1)
    held = f", {result.held_back} after the cut-off held back" if until else ""
    repeated = (
        f", {duplicates} duplicate keys within the file (first copy kept; rejects in {rejects})" if duplicates else ""
    )
    click.echo(f"{table}: {result.inserted} rows added, {result.already_there} already there{held}{repeated}")


@db.command("status")
@spec_option
@db_option
def db_status(spec_path: str | None, db: str) -> None:
    """Rows in the source table and the span of its window column."""
    from tiffin.storage import database

    spec, _ = _spec(spec_path)
    engine = database.engine_for(db)
    rows = database.count_rows(engine, spec)
    span = ""
    if rows:
        low, high = database.window_span(engine, spec)
        span = f", {spec.source.window_column} from {low} to {high}"
    click.echo(f"{engine.url.render_as_string()} {spec.source.table}: {rows} rows{span}")


@main.group("spec")
def spec_group() -> None:
    """Dataset specs."""


@spec_group.command("init")
@click.option("--csv", "csv_path", type=click.Path(exists=True, dir_okay=False),
              help="Draft from this file (CSV, .csv.gz or Parquet) instead of a --db table.")  # fmt: skip
@click.option("--table", help="The --db table to read (SELECT * FROM it); with --csv, the source table to name.")
@click.option("--db", "db", envvar="TIFFIN_DB_URL", help="SQLAlchemy URL of the database to read --table from "
              f"[env TIFFIN_DB_URL; in a checkout: {settings.DEFAULT_DB_URL}].")  # fmt: skip
@click.option("--name", help="The spec's name (default: from the table or file name).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="The file to write [specs/NAME.yaml].")
@click.option("--sample-rows", default=100_000, show_default=True, type=click.IntRange(min=1),
              help="Read at most this many rows (the first ones).")  # fmt: skip
@click.option("--force", is_flag=True, help="Overwrite --out if it exists.")
def spec_init(csv_path: str | None, table: str | None, db: str | None, name: str | None, out: Path | None,
              sample_rows: int, force: bool) -> None:  # fmt: skip
    """Draft a spec from a real table: types, observed ranges, closed category sets, nullability and a key
    inferred from its rows; the target, timestamp, features and evaluation guessed and marked `# DECIDE:`."""
    import re

    import pandas as pd
    import sqlalchemy as sa
    import yaml
    from pydantic import ValidationError

    from tiffin.core.draft import infer, spec_name
    from tiffin.storage import database

    context = click.get_current_context()
    if csv_path and context.get_parameter_source("db") == click.core.ParameterSource.COMMANDLINE:
        raise click.UsageError("give --csv or --db, not both")
    if not csv_path and not table:
        raise click.UsageError("give --table (read from --db) or --csv FILE")
    name = name or spec_name(table or csv_path or "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9_.-]*", name):
        raise click.UsageError(f"--name {name!r}: use lowercase letters, digits and _ . - (starting with a letter)")
    out = out or Path("specs") / f"{name}.yaml"
    if out.exists() and not force:
        raise click.ClickException(f"{out} exists: pass --force to overwrite it, or --out elsewhere")
    if csv_path:
        frame, source = database.read_seed_file(csv_path).head(sample_rows), csv_path
    else:
        try:
            engine = database.engine_for(settings.db_url(db), must_exist=True)
        except settings.DatabaseNotSet as missing:
            raise click.UsageError(str(missing)) from None
        except database.DatabaseUnusable as unusable:
            raise click.ClickException(str(unusable)) from unusable
        source = f"{table} in {engine.url.render_as_string()}"
        try:
            inspector = sa.inspect(engine)
            schema, _, bare = table.rpartition(".")
            if inspector.has_table(table):
                schema, bare = "", table
            elif not (schema and inspector.has_table(bare, schema=schema)):
                known = ", ".join(sorted(inspector.get_table_names())[:20]) or "none"
                raise click.ClickException(f"no table {table!r} in {engine.url.render_as_string()} (tables: {known})")
            query = sa.select(sa.literal_column("*")).select_from(sa.table(bare, schema=schema or None))
            with engine.connect() as connection:
                frame = pd.read_sql_query(query.limit(sample_rows), connection)
        except sa.exc.SQLAlchemyError as failed:
            raise click.ClickException(f"cannot read {source}: {_first_line(failed)}") from failed
        finally:
            engine.dispose()
    try:
        draft = infer(frame, name=name, table=table or name, seed_file=csv_path, source=source)
    except ValueError as empty:
        raise click.ClickException(f"{source}: {empty}") from empty
    text = draft.to_yaml()
    try:
        DatasetSpec.model_validate(yaml.safe_load(text))
    except ValidationError as broken:  # a bug in the drafting, not in the data: write nothing
        raise click.ClickException(f"the draft does not load as a spec: {broken}") from broken
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out}: a draft from {len(frame)} rows of {source}")
    click.echo("inferred:")
    for line in draft.summary():
        click.echo(f"  {line}")
    click.echo("decide (the # DECIDE: comments in the file):")
    for line in draft.to_decide():
        click.echo(f"  - {line}")
    click.echo(f"then: `tiffin validate --spec {out} <rows>`, and point params.yaml `spec:` at it")


@main.group()
def features() -> None:
    """History features: the feature table in the source database."""


@features.command("materialize")
@spec_option
@db_option
@click.option("--start", help="First event time to (re)compute, inclusive (default: the first row).")
@click.option("--end", help="Last window value to read, inclusive; a date means the whole day (default: the last).")
def features_materialize(spec_path: str | None, db: str, start: str | None, end: str | None) -> None:
    """Compute the spec's history features for the window's rows and write those new or changed (a re-run writes
    nothing; a late actual rewrites exactly the points that read it)."""
    from tiffin.features import store
    from tiffin.storage import database

    spec, _ = _spec(spec_path)
    if spec.history is None:
        raise click.UsageError(f"the spec {spec.name} declares no `history`: nothing to materialize")
    engine = database.engine_for(db, must_exist=True)
    done = store.materialize(engine, spec, start, end)
    click.echo(f"{store.table_name(spec)}: {done.points} points, {done.written} written (new or changed), "
               f"{done.unchanged} unchanged")  # fmt: skip


@main.command("validate", epilog=exits.epilog("tiffin validate"))
@spec_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--serving", is_flag=True, help="Check only the model inputs, as the API does.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), help="Write the problems to a CSV.")
def validate(spec_path: str | None, path: str, serving: bool, rejects_path: str | None) -> None:
    """Check a CSV or Parquet file against the contract; exit 1 if any row breaks it."""
    from tiffin.core.contract import Contract
    from tiffin.storage import database

    spec, _ = _spec(spec_path)
    result = Contract(spec).validate(database.read_seed_file(path), serving=serving)
    click.echo(f"{len(result.valid)} valid rows, {result.rejected_rows} rejected")
    if result.rejected_rows:
        click.echo(result.rejects.head(50).to_string(index=False))
        if rejects_path:
            result.rejects.to_csv(rejects_path, index=False)
        sys.exit(1)


class _JsonLines(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        body = json.loads(message) if message.startswith("{") else {"message": message}
        return json.dumps({"time": self.formatTime(record), "level": record.levelname, "logger": record.name, **body})


def _configure_logging() -> None:
    """Plain lines on a terminal; JSON lines for log collectors (cron, Kubernetes) otherwise."""
    handler = logging.StreamHandler()
    if not sys.stderr.isatty():
        handler.setFormatter(_JsonLines())
    logging.basicConfig(level=logging.INFO, handlers=[handler], force=True)


@main.command("batch", epilog=exits.epilog("tiffin batch"))
@db_option
@click.option("--start", help="Window start on the spec's window column, inclusive (default: the first row).")
@click.option("--end", help="Window end, inclusive: a date means that whole day, a date-time that moment (on a date "
              "column: its day) (default: every row present).")  # fmt: skip
@click.option("--since-last", is_flag=True, help="Start at this model's watermark: the latest window value it scored.")
@click.option("--model", "tag", help="Model tag (default: TIFFIN_MODEL, else the champion, models/champion.json).")
@click.option("--shadow", "shadow_tag", help="Challenger to score the same rows in shadow (default: the champion "
              "file's challenger; 'none': no shadow).")  # fmt: skip
@click.option(
    "--no-log",
    is_flag=True,
    help="Do not log the predictions for monitoring (the batch logs by reference: a role on each prediction row).",
)
@click.option("--chunk-rows", type=click.IntRange(min=1),
              help="Rows per read/score/write transaction (default: 25,000, `jobs.batch.CHUNK_ROWS`).")  # fmt: skip
@click.option("--retry-rejects", is_flag=True, help="Take up rows this model rejected before even if unchanged.")
@click.option("--processes", type=click.IntRange(min=1),
              help="Scoring processes, each with the model on one thread (default: one a core this process may use; "
                   "1 with --threads).")  # fmt: skip
@click.option("--threads", default=1, show_default=True, type=click.IntRange(min=1),
              help="OpenMP threads for the model in one scoring process (more are slower while it reads and "
                   "writes).")  # fmt: skip
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: this process; spark: Apache Spark (the `spark` extra: uv sync --extra spark).")  # fmt: skip
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL (with --engine spark).")
@click.option("--source", help="Spark: a Parquet dataset of raw rows (default: the --db table over JDBC).")
@click.option(
    "--output", help="Spark: write predictions/ and rejects/ here as Parquet (default: into the --db tables)."
)
def batch(db: str, start: str | None, end: str | None, since_last: bool, tag: str | None, shadow_tag: str | None,
          no_log: bool, chunk_rows: int | None, retry_rejects: bool, processes: int | None, threads: int, engine: str,
          master: str, source: str | None, output: str | None) -> None:  # fmt: skip
    """Score a window of the source table into `predictions`, exactly once per (key, model)."""
    import sqlalchemy as sa

    from tiffin.jobs.batch import CHUNK_ROWS, EXIT_BUSY, BatchBusy, BatchJob
    from tiffin.jobs.processes import usable_cores
    from tiffin.serving.scorer import Scorer
    from tiffin.storage import database
    from tiffin.storage.champion import model_option, serving_models
    from tiffin.storage.modelstore import ModelStore, NotFound

    _configure_logging()
    try:
        database.Window.parse(start, end)
    except database.WindowError as bad:
        raise click.UsageError(str(bad)) from None
    store, models = ModelStore(), serving_models()
    try:
        loaded = store.load(tag or models.champion)
        if engine == "spark":
            _spark_batch(loaded, db, source, output, master, start, end)
            return
        shadow_tag = models.challenger if shadow_tag is None else model_option(shadow_tag)
        challenger = store.load(shadow_tag) if shadow_tag else None
    except NotFound as missing:  # a tag that is not in the store: say which, with no traceback
        raise click.ClickException(f"{missing} (the models there: `tiffin models list`)") from None
    shadow = (challenger.tag, Scorer.from_model(challenger)) if challenger else None
    try:
        try:
            job = BatchJob(database.engine_for(db, must_exist=True), Scorer.from_model(loaded), loaded.tag,
                           chunk_rows=chunk_rows or CHUNK_ROWS, shadow=shadow, log_predictions=not no_log,
                           retry_rejects=retry_rejects, threads=threads,
                           processes=processes or (usable_cores() if threads == 1 else 1))  # fmt: skip
        except ValueError as refused:  # models that cannot run together
            raise click.UsageError(str(refused)) from None
        summary = job.run(start, end, since_last)
    except BatchBusy as busy:
        click.echo(f"batch not started: {busy}; try again later", err=True)
        sys.exit(EXIT_BUSY)
    except (database.DatabaseUnusable, LookupError, sa.exc.OperationalError, sa.exc.InterfaceError) as unusable:
        click.echo(f"batch failed: {_first_line(unusable)}", err=True)
        sys.exit(1)
    except Exception as error:  # the run is recorded as failed in batch_runs; say why, exit 1
        click.echo(f"batch failed: {type(error).__name__}: {_first_line(error)}", err=True)
        sys.exit(1)
    click.echo(summary.line())
    sys.exit(summary.exit_code)


def _first_line(error: BaseException) -> str:
    """An error as one line a person reads: drivers append SQL and links below it."""
    return (str(getattr(error, "orig", None) or error).strip().splitlines() or [type(error).__name__])[0]


def _spark_batch(loaded, db: str, source: str | None, output: str | None, master: str,
                 start: str | None, end: str | None) -> None:  # fmt: skip
    try:
        from tiffin.jobs import spark
    except ImportError as missing:
        raise click.ClickException(
            "the Spark engine needs PySpark, the `spark` extra: uv sync --extra spark"
        ) from missing
    history = None
    if loaded.spec.history:  # the feature table in --db: materialized here first when --db is also the source
        from tiffin.features import store
        from tiffin.storage import database

        engine = database.engine_for(db, must_exist=True)
        materialized = None if source else store.materialize(engine, loaded.spec, start, end)
        history = materialized.rows if materialized else store.read(engine, loaded.spec, start, end)
    session = spark.session(master)
    frame = (spark.read_parquet(session, source, loaded.spec, start, end) if source
             else spark.read_jdbc(session, db, loaded.spec, start, end))  # fmt: skip
    result = spark.run(frame, loaded, output=output, db_url=None if output else db, history=history)
    click.echo(result.line())
    sys.exit(exitcodes.PARTIAL if result.rows_rejected else exitcodes.OK)


def params_option(help_text: str, exists: bool = True) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """--params, the params file a command reads its section of."""
    return click.option(
        "--params",
        "params_path",
        type=click.Path(exists=exists, dir_okay=False, path_type=Path),
        default=str(paths.PARAMS),
        show_default=True,
        envvar="TIFFIN_PARAMS",
        help=f"{help_text} [env TIFFIN_PARAMS].",
    )


@main.group("monitor", epilog=exits.epilog("tiffin monitor"), invoke_without_command=True)
# Checked when a window is monitored, not before `calibrate` (which needs neither a database nor this file).
@click.option("--db", "db", envvar="TIFFIN_DB_URL", help=DB_HELP)
@click.option("--start", help="Window start (event time of the logged predictions). Required.")
@click.option("--end", help="Window end, inclusive; a date means the whole day. Required.")
@click.option("--model", "tag", help="Model tag (default: TIFFIN_MODEL, else the champion).")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=str(paths.MONITOR_REPORTS),
    show_default=True,
    help="Writes <out>/<start>_<end>/ (index.html, metrics.json, metrics.prom) and refreshes <out>/latest/.",
)
@params_option("Thresholds and the drift reference from its `monitor:` section", exists=False)
@click.pass_context
def monitor(
    ctx: click.Context, db: str | None, start: str | None, end: str | None, tag: str | None, out: Path,
    params_path: Path,
) -> None:  # fmt: skip
    """Drift (PSI vs the model's reference, at its calibrated thresholds) and production error of a window of
    the prediction log. `tiffin monitor calibrate` sets the thresholds."""
    if ctx.invoked_subcommand:
        given = [f"--{name}" for name in ("db", "start", "end", "out", "params")
                 if ctx.get_parameter_source("params_path" if name == "params" else name)
                 == click.core.ParameterSource.COMMANDLINE]  # fmt: skip
        if given:  # said before the subcommand, they would be silently ignored
            raise click.UsageError(f"{', '.join(given)} before `{ctx.invoked_subcommand}`: give its own options "
                                   f"after it (`tiffin monitor {ctx.invoked_subcommand} --help`)", ctx)  # fmt: skip
        ctx.obj = {"tag": tag}
        return
    for name, value in (("--start", start), ("--end", end)):
        if value is None:
            raise click.UsageError(f"Missing option '{name}'.", ctx)
    if not params_path.is_file():
        raise click.UsageError(f"Invalid value for '--params': File '{params_path}' does not exist.", ctx)
    db = _database(ctx, None, db)
    from tiffin.lifecycle import monitor_report, monitoring
    from tiffin.storage import database
    from tiffin.storage.modelstore import ModelStore, NotFound

    thresholds = monitoring.Thresholds.from_params(load_params(params_path, only=("monitor",)).get("monitor"))
    try:
        loaded = ModelStore().load(tag or _champion_tag())
        result = monitor_report.run(database.engine_for(db), loaded, start, end, out, thresholds)
    except (NotFound, FileNotFoundError) as missing:  # no such model, or one registered without a reference
        raise click.ClickException(str(missing)) from missing
    click.echo(monitor_report.summary(result))
    sys.exit(result.exit_code)


@monitor.command("calibrate")
@click.option(
    "--model", "tag", help="Model tag (default: the one given to `monitor`, TIFFIN_MODEL, else the champion)."
)
@params_option("The reference, window size and target false-alarm rate from its `monitor:` section")
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Also write the thresholds here (the model's own copy is in its folder of the store).",
)
@click.pass_context
def monitor_calibrate(ctx: click.Context, tag: str | None, params_path: Path, out: Path | None) -> None:
    """Set each feature's drift threshold at the target false-alarm rate: replay the model's training period
    in windows of `monitor.window_days` against the chosen reference; `tiffin monitor` then judges at them."""
    from tiffin.lifecycle import calibration, monitoring
    from tiffin.storage.modelstore import ModelStore, NotFound

    tag = tag or (ctx.obj or {}).get("tag")  # `tiffin monitor --model X calibrate` calibrates X

    settings = monitoring.Thresholds.from_params(load_params(params_path, only=("monitor",)).get("monitor"))
    try:
        loaded = ModelStore().load(tag or _champion_tag())
        found = calibration.calibrate_model(loaded, settings)
    except (NotFound, FileNotFoundError, ValueError) as impossible:
        raise click.ClickException(str(impossible)) from impossible
    if out is not None:
        found.save(out)
    click.echo(calibration.summary(found, loaded.calibration_file))


@main.command("retrain", epilog=exits.epilog("tiffin retrain"))
@db_option
@click.option("--force", is_flag=True, help="The request trigger: retrain whatever the others say.")
@click.option("--dry-run", is_flag=True, help="Say which triggers fire; change nothing.")
@click.option("--now", "today", type=click.DateTime(["%Y-%m-%d"]), help="Today (default: the real today).")
@click.option("--params", "params_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              default=str(paths.PARAMS), show_default=True, envvar="TIFFIN_PARAMS",
              help="Params: the window it moves, its `retrain:` rules [env TIFFIN_PARAMS].")  # fmt: skip
@click.option("--report", type=click.Path(dir_okay=False, path_type=Path), help="Also write a Markdown report here.")
def retrain(db: str, force: bool, dry_run: bool, today: datetime | None, params_path: Path,
            report: Path | None) -> None:  # fmt: skip
    """Retrain if a trigger fires (new data, schedule, metric drop, request): move the window, `dvc repro`.

    One retrain at a time per dataset (exit 75 when another holds it); none within `retrain.cooldown_days` of
    the last one unless --force; the metric drop must hold at `retrain.metric_checks` consecutive checks. Every
    check goes to the database's `retrain_checks`, every run to `retrain_runs` with its cause. The promotion
    gate (the bless stage) then decides whether the new model becomes champion.
    Prints the triggers and the decision as JSON lines.
    """
    from tiffin.lifecycle import retraining
    from tiffin.storage import database

    params = load_params(params_path)
    engine = database.engine_for(db)
    now = today.date() if today else date.today()
    if dry_run:
        lines, outcome, status = _retrain_checked(engine, params, params_path, now, force, dry_run=True)
    else:
        try:
            with retraining.RetrainLock(engine, load_spec(params_path.parent / params["spec"]).name):
                lines, outcome, status = _retrain_checked(engine, params, params_path, now, force, dry_run=False)
        except retraining.RetrainBusy as busy:
            click.echo(f"retrain not started: {busy}; try again later", err=True)
            sys.exit(exitcodes.BUSY)
    for line in [*lines, outcome]:
        click.echo(json.dumps(line))
    if report:
        report.write_text(retraining.markdown(lines, outcome))
    sys.exit(status)


def _retrain_checked(engine, params: dict, params_path: Path, now: date, force: bool, *,
                     dry_run: bool) -> tuple[list[dict], dict, int]:  # fmt: skip
    """The check, the arbitration and (unless a dry run) the recorded retrain: the triggers, the outcome, the exit
    status. Runs with the retrain lock held, except a dry run, which changes nothing."""
    from tiffin.lifecycle import retraining
    from tiffin.storage.modelstore import ModelStore
    from tiffin.storage.retrain_ledger import RetrainLedger

    rules = retraining.RetrainRules.from_params(params.get("retrain"))
    champion = ModelStore().load(_champion_tag())
    ledger = RetrainLedger(engine)
    if not dry_run:
        ledger.abandon_running(champion.spec.name)
    raw = retraining.check(engine, champion, rules, now=now, force=force)
    plan = retraining.arbitrate(ledger, champion.spec.name, champion.tag, raw, rules, now=now, record=not dry_run)
    lines = [{"trigger": t.name, "fired": t.fired, "detail": t.detail} for t in plan.fired]
    outcome: dict = {"retrain": plan.retrain, "champion": champion.tag, "decision": plan.decision}
    if plan.retrain and dry_run:
        return lines, outcome | {"retrain": "dry run"}, 0
    if not plan.retrain:
        return lines, outcome, 0
    try:
        outcome |= retraining.run_recorded(ledger, plan, champion, params_path, now=now, engine=engine)
    except retraining.PipelineStopped as stopped:
        return lines, outcome | {"blessed": False, "reasons": [f"the pipeline stopped: {stopped}"]}, 1
    return lines, outcome, 0


@main.command("simulate")
@click.option("--start", type=click.DateTime(["%Y-%m-%d"]),
              help="The first replayed day; the first model is trained on the data before it "
                   "(default: a year before --end).")  # fmt: skip
@click.option("--end", type=click.DateTime(["%Y-%m-%d"]), help="The last replayed day (default: params ingest.end).")
@click.option("--step-days", default=14, show_default=True, help="Days that arrive between two checks.")
@click.option("--workdir", type=click.Path(file_okay=False, path_type=Path), default=".simulation",
              show_default=True, help="The project copy (replaced), with its own database and store.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="reports/simulation",
              show_default=True, help="Where the steps (CSV), the chart and the summary go.")  # fmt: skip
@click.option("--set", "overrides", multiple=True, metavar="SECTION.KEY=VALUE",
              help="Change a param in the copy, e.g. --set retrain.max_mae_ratio=1.3 (repeatable).")  # fmt: skip
def simulate(start: datetime | None, end: datetime | None, step_days: int, workdir: Path, out: Path,
             overrides: tuple[str, ...]) -> None:  # fmt: skip
    """Replay the real hours from --start into a fresh copy of the project: batch scoring, monitoring
    and the retraining check at every step; writes a report with a chart to --out."""
    import yaml

    from tiffin.lifecycle import simulation

    if not Path("dvc.yaml").exists():
        raise click.UsageError("run it from the project root (where dvc.yaml is)")
    changes = {}
    for item in overrides:
        name, _, value = item.partition("=")
        changes[name] = yaml.safe_load(value)
    _configure_logging()
    last = end.date() if end else date.fromisoformat(str(load_params()["ingest"]["end"]))
    first = start.date() if start else last - timedelta(days=365)
    page = simulation.simulate(Path.cwd(), workdir.resolve(), out.resolve(), first, last, step_days, changes)
    click.echo(f"report: {page}")


@main.command("serve", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.argument("arguments", nargs=-1, type=click.UNPROCESSED)
def serve(arguments: tuple[str, ...]) -> None:
    """`bentoml serve ARGUMENTS` with a Prometheus folder of this server's own.

    BentoML empties `$BENTOML_HOME/prometheus_multiproc_dir` as a server starts, so two servers on one model
    store would erase each other's metrics; each `tiffin serve` counts in `$BENTOML_HOME/metrics-instances/<pid>`.
    Example: `tiffin serve service.app:Tiffin --port 3000`.
    """
    from tiffin.serving.server import serve as serve_bento

    serve_bento(list(arguments))


@main.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True, help="The address to listen on.")
@click.option("--port", default=8080, show_default=True, type=int, help="The port to listen on.")
def ui(host: str, port: int) -> None:
    """The web interface (experiments, models, batch runs, monitoring) for this checkout, on http://HOST:PORT/."""
    import uvicorn

    from tiffin.storage import paths, settings
    from tiffin.ui import pages

    dvc_yaml = settings.project_file(paths.DVC_YAML)
    app = pages.standalone(dvc_yaml.parent.resolve() if dvc_yaml else None)
    click.echo(f"Tiffin's interface: http://{host}:{port}/ (Ctrl-C stops it)")
    uvicorn.run(app, host=host, port=port, log_level="warning")


@main.command("loadtest", epilog=exits.epilog("tiffin loadtest"))
@click.option("--bento", default="tiffin:latest", show_default=True, help="The built Bento to start and test.")
@click.option("--host", help="Test a service already running here instead (e.g. http://127.0.0.1:3000).")
@click.option("--slo", type=click.Path(exists=True, dir_okay=False, path_type=Path), default="loadtests/slo.yaml",
              show_default=True, help="The objectives.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="reports/loadtest", show_default=True,
              help="Where Locust's statistics, the HTML report and the verdict go.")  # fmt: skip
@click.option("--run-seconds", type=float, help="Override the SLO file's run time.")
def loadtest(bento: str, host: str | None, slo: Path, out: Path, run_seconds: float | None) -> None:
    """The release gate: serve the built Bento, load it with Locust, check the objectives."""
    from tiffin.jobs.loadtest import gate

    sys.exit(gate(bento=None if host else bento, host=host, slo=slo, out=out, run_seconds=run_seconds))


@main.group()
def container() -> None:
    """The Bento as a container image: build it, gate it (the API and the batch runner come from one image)."""


@container.command("build")
@click.option("--bento", default="tiffin:latest", show_default=True, help="The built Bento to put in the image.")
@click.option("--image", default="tiffin:latest", show_default=True, help="The image's name and tag.")
@click.option("--base-image", default="python:3.11-slim", show_default=True,
              help="A Python 3.11 image with venv (deploy/container/base-image.sh makes one offline).")  # fmt: skip
@click.option("--wheels", type=click.Path(file_okay=False, path_type=Path), default=".cache/wheelhouse",
              show_default=True, help="The host's wheels of the locked requirements.")  # fmt: skip
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Write what was built here (JSON).")
def container_build(bento: str, image: str, base_image: str, wheels: Path, out: Path | None) -> None:
    """Build the image: BentoML's Dockerfile and context, the requirements from a host-built wheelhouse, labelled
    with the model tag, git commit and data snapshot hash."""
    from tiffin.jobs.container import ContainerFailed, build

    try:
        built = build(bento, image, base_image, wheels.resolve())
    except ContainerFailed as failed:
        raise click.ClickException(str(failed)) from None
    click.echo(f"{built.image}: {built.size_mb:,.0f} MB, built in {built.seconds:.0f} s from {built.bento}")
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(built.as_json() + "\n")


@container.command("gate", epilog=exits.epilog("tiffin container gate"))
@click.option("--image", default="tiffin:latest", show_default=True, help="The image to gate.")
@db_option
@click.option("--slo", type=click.Path(exists=True, dir_okay=False, path_type=Path), default="loadtests/slo.yaml",
              show_default=True, help="The objectives.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="reports/container/loadtest",
              show_default=True, help="Where the gate's report and the container's log go.")  # fmt: skip
@click.option("--run-seconds", type=float, help="Override the SLO file's run time.")
def container_gate(image: str, db: str, slo: Path, out: Path, run_seconds: float | None) -> None:
    """The release gate against the image: start it on a free port (host network), wait for /readyz, run Locust,
    always remove the container (its log: OUT/container.log). A SQLite --db is copied, never written."""
    from tiffin.jobs.container import gate

    code, ready_after = gate(image, db, slo=slo, out=out, run_seconds=run_seconds)
    if ready_after is not None:
        (out / "ready.json").write_text(json.dumps({"image": image, "start_to_ready_s": ready_after}) + "\n")
    sys.exit(code)


@container.command("manifests")
@click.option("--image", required=True, help="The image the release pushed, e.g. ghcr.io/org/tiffin:v1.")
@click.option("--source", type=click.Path(exists=True, file_okay=False, path_type=Path), default="deploy/kubernetes",
              show_default=True, help="The kustomization to render.")  # fmt: skip
def container_manifests(image: str, source: Path) -> None:
    """Print the Kubernetes manifests with IMAGE as the image of the API and the batch (`kubectl kustomize`)."""
    from tiffin.jobs.container import ContainerFailed, render_manifests

    try:
        click.echo(render_manifests(source, image), nl=False)
    except ContainerFailed as failed:
        raise click.ClickException(str(failed)) from None


@main.group()
def models() -> None:
    """Registered models in the BentoML model store."""


def _champion_tag() -> str:
    from tiffin.storage.champion import serving_models

    try:
        return serving_models().champion
    except LookupError as missing:
        raise click.UsageError(f"{missing} (or give a TAG)") from missing


def _load(tag: str):
    """The model from the store, or a clear error naming the store."""
    from tiffin.storage.modelstore import ModelStore, NotFound

    store = ModelStore()
    try:
        return store.load(tag)
    except NotFound as missing:
        raise click.ClickException(f"{tag} is not in the store {store.path}") from missing


@models.command("list")
@click.option("--name", help="Only this model name (dataset).")
def models_list(name: str | None) -> None:
    """Registered models by dataset, newest first, with their role (champion, challenger) and test MAE."""
    from tiffin.storage.champion import ChampionState, all_states, dataset_of
    from tiffin.storage.modelstore import ModelStore

    by_dataset: dict[str, list] = {}
    for model in ModelStore().list(name):
        by_dataset.setdefault(dataset_of(str(model.tag)), []).append(model)
    states = {state.dataset: state for state in all_states()}  # the champion file, read once
    for dataset, stored in sorted(by_dataset.items()):
        state = states.get(dataset) or ChampionState(dataset=dataset)
        click.echo(f"{dataset}: champion {state.champion or '(none)'}, challenger {state.challenger or '(none)'}")
        for model in stored:
            metrics = model.info.metadata.get("metrics", {}).get("test", {})
            role = state.role_of(str(model.tag)) or ""
            click.echo(f"  {model.tag}  {model.info.creation_time:%Y-%m-%d %H:%M}  "
                       f"test MAE {metrics.get('mae', '?'):<8} {role}")  # fmt: skip


@models.command("show")
@click.argument("tag", required=False)
def models_show(tag: str | None) -> None:
    """A model's lineage (commit, data snapshot, params, metrics), role and promotion decision (default: champion)."""
    from tiffin.lifecycle.promotion import decision_about, format_decision
    from tiffin.storage.champion import ChampionState, dataset_of

    model = _load(tag or _champion_tag())
    state = ChampionState.load(dataset=dataset_of(model.tag))
    events = [event for event in state.history if model.tag in (event["tag"], event["previous"])]
    click.echo(json.dumps({"tag": model.tag, "role": state.role_of(model.tag), **model.metadata,
                           "promotion_history": [{k: v for k, v in e.items() if k != "decision"} for e in events]},
                          indent=2, default=str))  # fmt: skip
    decision = decision_about(model.tag, state)
    if decision and "slices" in decision:
        click.echo("\n" + format_decision(decision))


def _changed(state, what: str) -> None:
    path = state.save()
    click.echo(f"{what}; {state.dataset}: champion {state.champion}, challenger {state.challenger or '(none)'} "
               f"({path}). "
               "Commit it; the API and the batch runner pick it up when they (re)start.")  # fmt: skip


@models.command("promote")
@click.argument("tag")
@click.option("--reason", default="promoted by hand", show_default=True, help="Recorded in the champion history.")
def models_promote(tag: str, reason: str) -> None:
    """Make TAG the champion (the current one stays the rollback target)."""
    from tiffin.lifecycle.promotion import actor
    from tiffin.storage.champion import ChampionState, dataset_of

    loaded = _load(tag)  # it must exist in the store
    state = ChampionState.load(dataset=dataset_of(loaded.tag))
    try:
        state.promote(loaded.tag, by=actor("tiffin models"), reason=reason)
    except ValueError as same:
        raise click.ClickException(str(same)) from same
    _changed(state, f"promoted {loaded.tag}")


@models.command("rollback")
@click.option("--reason", default="rolled back by hand", show_default=True, help="Recorded in the champion history.")
@click.option("--dataset", help="Whose champion (default: the spec params.yaml names).")
def models_rollback(reason: str, dataset: str | None) -> None:
    """Restore the dataset's previous champion; the gate will not promote the rolled-back model again by itself.
    A rollback never crosses datasets: with no earlier champion of this dataset, nothing changes."""
    from tiffin.lifecycle.promotion import actor
    from tiffin.storage.champion import ChampionState

    state = ChampionState.load(dataset=dataset)
    current = state.champion
    try:
        state.rollback(by=actor("tiffin models"), reason=reason)
    except LookupError as nothing:
        raise click.ClickException(str(nothing)) from nothing
    _changed(state, f"rolled back {current}")


@models.command("challenger")
@click.argument("tag", required=False)
@click.option("--clear", is_flag=True, help="No challenger (stop shadow scoring).")
@click.option("--reason", default="set by hand", show_default=True, help="Recorded in the champion history.")
def models_challenger(tag: str | None, clear: bool, reason: str) -> None:
    """Run TAG in shadow beside the champion (API and batch score it too and log both)."""
    from tiffin.lifecycle.promotion import actor
    from tiffin.storage.champion import ChampionState, dataset_of

    if bool(tag) == clear:
        raise click.UsageError("give a TAG or --clear")
    tag = _load(tag).tag if tag else None
    state = ChampionState.load(dataset=dataset_of(tag) if tag else None)
    try:
        state.set_challenger(tag, by=actor("tiffin models"), reason=reason)
    except ValueError as same:
        raise click.ClickException(str(same)) from same
    _changed(state, f"challenger {tag or 'cleared'}")


@models.command("card")
@click.argument("tag", required=False)
def models_card(tag: str | None) -> None:
    """A model card in Markdown: what it predicts, from which data, how well, with which lineage."""
    from tiffin.lifecycle.card import model_card

    click.echo(model_card(_load(tag or _champion_tag())))


@models.command("check", epilog=exits.epilog("tiffin models check"))
def models_check() -> None:
    """Exit 1 if the model the pipeline registered (models/registration.json) is not in the store."""
    from tiffin.storage.champion import registered_tag
    from tiffin.storage.modelstore import ModelStore

    tag = registered_tag()
    if tag is None:
        raise click.UsageError("no model registered here yet: run `make repro` (or give a TAG)")
    store = ModelStore()
    if tag not in store:
        click.echo(f"{tag} is missing from {store.path}", err=True)
        sys.exit(1)
    click.echo(f"{tag} is in the store")
