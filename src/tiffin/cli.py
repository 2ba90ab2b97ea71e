"""`tiffin`: the project's command line."""

from __future__ import annotations

import json
import logging
import sys
from datetime import datetime
from pathlib import Path

import click

from tiffin import settings
from tiffin.spec import DatasetSpec, load_spec
from tiffin.stage import load_params


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
db_option = click.option(
    "--db",
    "db",
    envvar="TIFFIN_DB_URL",
    default=settings.DEFAULT_DB_URL,
    show_default=True,
    help="SQLAlchemy URL of the source database [env TIFFIN_DB_URL].",
)


@click.group()
@click.version_option(package_name="tiffin")
def main() -> None:
    """Tiffin: versioned data to a released, load-tested model service."""


@main.group()
def db() -> None:
    """The source database."""


@db.command("seed")
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
def db_seed(spec_path: str | None, db: str, seed_file: str | None, until: datetime | None, if_empty: bool) -> None:
    """Load raw rows, as they are, into the source table. Idempotent: existing keys are skipped."""
    from tiffin import db as database

    spec, _ = _spec(spec_path)
    engine = database.engine_for(db)
    if if_empty and database.count_rows(engine, spec):
        click.echo(f"{spec.source.table}: {database.count_rows(engine, spec)} rows already, nothing to do")
        return
    seed_file = seed_file or spec.source.seed_file
    if not seed_file:
        raise click.UsageError("the spec has no source.seed_file: pass --file")
    result = database.seed(engine, spec, database.read_seed_file(seed_file), until=until)
    held = f", {result.held_back} after the cut-off held back" if until else ""
    click.echo(
        f"{spec.source.table}: {result.inserted} rows added, {result.offered - result.inserted} already there{held}"
    )


@db.command("status")
@spec_option
@db_option
def db_status(spec_path: str | None, db: str) -> None:
    """Rows in the source table and the span of its window column."""
    import sqlalchemy as sa

    from tiffin import db as database

    spec, _ = _spec(spec_path)
    engine = database.engine_for(db)
    rows = database.count_rows(engine, spec)
    span = ""
    if rows:
        table = database.source_table(engine, spec)
        column = table.c[spec.source.window_column]
        with engine.connect() as connection:
            low, high = connection.execute(sa.select(sa.func.min(column), sa.func.max(column))).one()
        span = f", {spec.source.window_column} from {low} to {high}"
    click.echo(f"{engine.url.render_as_string()} {spec.source.table}: {rows} rows{span}")


@main.command("validate")
@spec_option
@click.argument("path", type=click.Path(exists=True, dir_okay=False))
@click.option("--serving", is_flag=True, help="Check only the model inputs, as the API does.")
@click.option("--rejects", "rejects_path", type=click.Path(dir_okay=False), help="Write the problems to a CSV.")
def validate(spec_path: str | None, path: str, serving: bool, rejects_path: str | None) -> None:
    """Check a CSV or Parquet file against the contract; exit 1 if any row breaks it."""
    from tiffin import db as database
    from tiffin.contract import Contract

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


@main.command("batch")
@db_option
@click.option("--start", help="Window start on the spec's window column (default: the table's first).")
@click.option("--end", help="Window end, inclusive; a date means the whole day (default: the table's last).")
@click.option("--since-last", is_flag=True, help="Start where the last successful run of this model ended.")
@click.option("--model", "tag", help="Model tag (default: TIFFIN_MODEL, else the one the pipeline registered).")
@click.option("--chunk-rows", default=100_000, show_default=True, help="Rows per read/score/write transaction.")
@click.option("--engine", type=click.Choice(["local", "spark"]), default="local", show_default=True,
              help="local: this process; spark: Apache Spark (pip install 'tiffin[spark]').")  # fmt: skip
@click.option("--master", default="local[*]", show_default=True, help="Spark master URL (with --engine spark).")
@click.option("--source", help="Spark: a Parquet dataset of raw rows (default: the --db table over JDBC).")
@click.option(
    "--output", help="Spark: write predictions/ and rejects/ here as Parquet (default: into the --db tables)."
)
def batch(db: str, start: str | None, end: str | None, since_last: bool, tag: str | None, chunk_rows: int,
          engine: str, master: str, source: str | None, output: str | None) -> None:  # fmt: skip
    """Score a window of the source table into `predictions`, exactly once per (key, model).

    Exit codes: 0 success, 3 partial (some rows rejected, see prediction_rejects), 1 failure.
    """
    from tiffin import db as database
    from tiffin import registry, serving
    from tiffin.batch import BatchJob
    from tiffin.inference import Scorer

    _configure_logging()
    loaded = registry.load(tag or serving.model_tag())
    if engine == "spark":
        _spark_batch(loaded, db, source, output, master, start, end)
        return
    job = BatchJob(database.engine_for(db), Scorer(loaded.pipeline, loaded.spec), loaded.tag, chunk_rows=chunk_rows)
    try:
        summary = job.run(start, end, since_last)
    except Exception as error:  # the run is recorded as failed in batch_runs; say why, exit 1
        click.echo(f"batch failed: {type(error).__name__}: {error}", err=True)
        sys.exit(1)
    click.echo(summary.line())
    sys.exit(summary.exit_code)


def _spark_batch(loaded, db: str, source: str | None, output: str | None, master: str,
                 start: str | None, end: str | None) -> None:  # fmt: skip
    try:
        from tiffin import spark
    except ImportError as missing:
        raise click.ClickException("the Spark engine needs PySpark: pip install 'tiffin[spark]'") from missing
    session = spark.session(master)
    frame = (spark.read_parquet(session, source, loaded.spec, start, end) if source
             else spark.read_jdbc(session, db, loaded.spec, start, end))  # fmt: skip
    result = spark.run(frame, loaded, output=output, db_url=None if output else db)
    click.echo(result.line())
    sys.exit(3 if result.rows_rejected else 0)


@main.command("loadtest")
@click.option("--bento", default="tiffin:latest", show_default=True, help="The built Bento to start and test.")
@click.option("--host", help="Test a service already running here instead (e.g. http://127.0.0.1:3000).")
@click.option("--slo", type=click.Path(exists=True, dir_okay=False, path_type=Path), default="loadtests/slo.yaml",
              show_default=True, help="The objectives.")  # fmt: skip
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default="reports/loadtest", show_default=True)
@click.option("--run-seconds", type=float, help="Override the SLO file's run time.")
def loadtest(bento: str, host: str | None, slo: Path, out: Path, run_seconds: float | None) -> None:
    """The release gate: serve the built Bento, load it with Locust, check the objectives.

    Exit codes: 0 all objectives met, 1 an objective missed, 2 the server failed to start or answer.
    """
    from tiffin.loadtest import gate

    sys.exit(gate(bento=None if host else bento, host=host, slo=slo, out=out, run_seconds=run_seconds))


@main.group()
def models() -> None:
    """Registered models in the BentoML model store."""


@models.command("list")
@click.option("--name", help="Only this model name.")
def models_list(name: str | None) -> None:
    """Registered models, newest first."""
    from tiffin import registry

    for model in registry.list_models(name):
        metrics = model.info.metadata.get("metrics", {}).get("test", {})
        click.echo(f"{model.tag}  {model.info.creation_time:%Y-%m-%d %H:%M}  test MAE {metrics.get('mae', '?')}")


def _registered_tag() -> str:
    if tag := settings.registered_tag():
        return tag
    raise click.UsageError("no model registered here yet: run `make repro` (or give a TAG)")


@models.command("show")
@click.argument("tag", required=False)
def models_show(tag: str | None) -> None:
    """A model's lineage: commit, data snapshot, params and metrics (default: the pipeline's)."""
    from bentoml.exceptions import NotFound

    from tiffin import registry

    tag = tag or _registered_tag()
    try:
        model = registry.load(tag)
    except NotFound as missing:
        raise click.ClickException(f"{tag} is not in the store {registry.store_path()}") from missing
    click.echo(json.dumps({"tag": model.tag, **model.metadata}, indent=2, default=str))


@models.command("card")
@click.argument("tag", required=False)
def models_card(tag: str | None) -> None:
    """A model card in Markdown: what it predicts, from which data, how well, with which lineage."""
    from tiffin import registry

    model = registry.load(tag or _registered_tag())
    meta, spec = model.metadata, model.spec
    metrics = meta.get("metrics", {})

    def row(name: str, m: dict) -> str:
        return f"| {name} | {m.get('mae')} | {m.get('rmse')} | {m.get('r2')} | {m.get('rows')} |"

    excluded = ", ".join(f"`{c}`" for c in spec.never_features) or "nothing excluded"
    lines = [
        f"# Model card: {model.tag}", "", spec.description, "",
        f"- Predicts `{spec.target}` from {', '.join(f'`{c}`' for c in spec.features.columns())}",
        f"- Never uses {excluded} (known only afterwards)",
        f"- Source table `{spec.source.table}`, window {meta.get('params', {}).get('ingest', {})}",
        f"- Data snapshot sha256 `{meta.get('data_snapshot_sha256', '?')}`",
        f"- Model sha256 `{meta.get('model_sha256', '?')}`; git commit `{meta.get('git_commit', '?')}`", "",
        "| test period | MAE | RMSE | R² | rows |", "|---|---|---|---|---|",
        row("model", metrics.get("test", {})), row("naive baseline", metrics.get("baseline", {}).get("test", {})),
        "", f"Validation: {json.dumps(meta.get('validation', {}))}", "",
        f"Hyper-parameters: `{json.dumps(meta.get('params', {}).get('train', {}))}`",
    ]  # fmt: skip
    click.echo("\n".join(lines))


@models.command("check")
def models_check() -> None:
    """Exit 1 if the model the pipeline registered (models/registration.json) is not in the store."""
    from bentoml.exceptions import NotFound

    from tiffin import registry

    tag = _registered_tag()
    try:
        registry.load(tag)
    except NotFound:
        click.echo(f"{tag} is missing from {registry.store_path()}", err=True)
        sys.exit(1)
    click.echo(f"{tag} is in the store")
