"""`make bench` (batch part): 1,000,000 rows, database to database, against in-memory scoring.

The rows are the real hourly data repeated 58 times, each copy 731 days later (keys stay unique).
Baseline: the same model scoring the same rows already in memory (a canonical DataFrame), in this
process. Batch: `python -m tiffin batch` end to end (read, contract, score, write) on SQLite and on
PostgreSQL, as a subprocess so its peak memory is its own. Writes reports/bench/batch.{json,md}.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.storage import database as db
from tiffin.storage.champion import serving_models
from tiffin.storage.modelstore import ModelStore

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/bench"
COPIES = 58
PG_ADMIN = os.environ.get("TIFFIN_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def million_rows(seed_file: Path) -> pd.DataFrame:
    raw = pd.read_csv(seed_file)
    days = pd.to_datetime(raw["dteday"])
    copies = [raw.assign(dteday=(days + pd.Timedelta(days=731 * k)).dt.strftime("%Y-%m-%d")) for k in range(COPIES)]
    return pd.concat(copies, ignore_index=True)


def in_memory_rows_per_s(rows: pd.DataFrame) -> dict:
    loaded = ModelStore().load(serving_models().champion)
    canonical = Contract(loaded.spec).validate(rows, serving=True).valid
    loaded.pipeline.predict(canonical.head(1000))  # warm
    began = time.perf_counter()
    loaded.pipeline.predict(canonical)
    seconds = time.perf_counter() - began
    return {"rows": len(canonical), "seconds": round(seconds, 2), "rows_per_s": round(len(canonical) / seconds)}


def run_batch(url: str, end: str | None = None, *options: str) -> dict:
    """`python -m tiffin batch` as a child process: its summary, wall time and peak memory (sampled)."""
    command = [sys.executable, "-m", "tiffin", "batch", "--db", url, *(["--end", end] if end else []), *options]
    began = time.perf_counter()
    child = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, child.memory_info().rss)
        time.sleep(0.02)
    wall = time.perf_counter() - began
    stdout, stderr = child.communicate()
    if child.returncode != 0:
        sys.exit(f"batch failed ({child.returncode}):\n{stdout}\n{stderr[-3000:]}")
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        latest = sa.text("SELECT rows_read, duration_s FROM batch_runs ORDER BY started_at DESC")
        run = connection.execute(latest).first()
    engine.dispose()
    return {
        "rows": run.rows_read,
        "job_seconds": round(run.duration_s, 2),
        "rows_per_s": round(run.rows_read / run.duration_s),
        "process_seconds": round(wall, 1),
        "peak_rss_mib": round(peak / 2**20),
    }


def reset_outputs(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("predictions", "prediction_rejects", "batch_runs", "batch_watermarks", "prediction_log"):
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


def seeded(url: str, rows: pd.DataFrame) -> float:
    spec = ModelStore().load(serving_models().champion).spec
    began = time.perf_counter()
    db.seed(db.engine_for(url), spec, rows)
    return round(time.perf_counter() - began, 1)


def measure(url: str, rows: pd.DataFrame) -> dict:
    seed_seconds = seeded(url, rows)
    reset_outputs(url)
    small = run_batch(url, end="2022-12-31")  # the first six copies: ~104,000 rows
    reset_outputs(url)
    full = run_batch(url)
    again = run_batch(url)  # nothing left to score: the cost of an idempotent re-run
    reset_outputs(url)
    unlogged = run_batch(url, None, "--no-log")  # what writing the prediction log costs
    reset_outputs(url)
    threads = run_batch(url, None, "--threads", "2")  # OpenMP's own default here: a thread a core (not pinned)
    return {"seed_seconds": seed_seconds, "window_100k": small, "window_1m": full, "rerun": again,
            "window_1m_unlogged": unlogged, "window_1m_two_threads": threads}  # fmt: skip


def spark_rows_per_s(rows: pd.DataFrame, master: str = "local[2]") -> dict:
    """The Spark engine on the same rows from Parquet, in local mode: the overhead a cluster must amortise."""
    try:
        from tiffin.jobs import spark
    except ImportError:
        return {"skipped": "PySpark is not installed (pip install 'tiffin[spark]')"}
    loaded = ModelStore().load(serving_models().champion)
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "rows.parquet"
        rows.to_parquet(source, index=False, row_group_size=100_000)
        session = spark.session(master, app="tiffin-bench")
        began = time.perf_counter()
        frame = spark.read_parquet(session, str(source), loaded.spec, None, None)
        run = spark.run(frame, loaded, f"{scratch}/out")
        seconds = time.perf_counter() - began
        session.stop()
    return {
        "master": master,
        "rows": run.rows_read,
        "seconds": round(seconds, 1),
        "rows_per_s": round(run.rows_read / seconds),
    }


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    rows = million_rows(ROOT / "data/seed/bike_sharing_hourly.csv.gz")
    results = {"rows": len(rows), "in_memory": in_memory_rows_per_s(rows.drop(columns=["cnt"]))}
    print(f"in memory: {results['in_memory']}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite"] = measure(f"sqlite:///{scratch}/bench.db", rows)
    print(f"sqlite: {results['sqlite']}", flush=True)
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"tiffin_bench_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        results["postgresql"] = measure(sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(False), rows)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"postgresql: {results['postgresql']}", flush=True)
    results["spark"] = spark_rows_per_s(rows.drop(columns=["cnt", "casual", "registered"]))
    print(f"spark: {results['spark']}", flush=True)
    (OUT / "batch.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "batch.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    memory = results["in_memory"]["rows_per_s"]
    lines = [
        "| 1,000,000 rows | rows/s | vs in-memory | peak RSS, 1 M rows | peak RSS, 104 k rows | re-run (nothing new) |",
        "|---|---|---|---|---|---|",
        f"| in memory: `pipeline.predict` on a canonical DataFrame | {memory:,} | 1.00 | | | |",
    ]
    for name in ("sqlite", "postgresql"):
        run = results[name]
        full = run["window_1m"]
        lines.append(
            f"| batch, {name} -> {name} (read, contract, score, write) | {full['rows_per_s']:,} | "
            f"{full['rows_per_s'] / memory:.2f} | {full['peak_rss_mib']} MiB | "
            f"{run['window_100k']['peak_rss_mib']} MiB | {run['rerun']['job_seconds']} s |"
        )
        if "window_1m_unlogged" in run:
            bare = run["window_1m_unlogged"]
            lines.append(f"| the same without the prediction log (`--no-log`) | {bare['rows_per_s']:,} | "
                         f"{bare['rows_per_s'] / memory:.2f} | {bare['peak_rss_mib']} MiB | | |")  # fmt: skip
        if "window_1m_two_threads" in run:
            two = run["window_1m_two_threads"]
            lines.append(f"| the model on 2 OpenMP threads (`--threads 2`; default 1) | {two['rows_per_s']:,} | "
                         f"{two['rows_per_s'] / memory:.2f} | {two['peak_rss_mib']} MiB | | |")  # fmt: skip
    if "rows_per_s" in results.get("spark", {}):
        spark = results["spark"]
        lines.append(f"| batch, Spark `{spark['master']}`, Parquet -> Parquet (session already up) | "
                     f"{spark['rows_per_s']:,} | {spark['rows_per_s'] / memory:.2f} | | | |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
