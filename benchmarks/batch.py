"""`make bench` (batch part): 1,000,000 rows, database to database, against in-memory scoring.

The rows are the real hourly data repeated 58 times, each copy 735 days (105 weeks) later: keys stay unique and
each date keeps its weekday (the contract checks it).
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
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import psutil
import sqlalchemy as sa
from threadpoolctl import threadpool_limits

from benchmarks.models import row_only_model
from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec
from tiffin.features import store
from tiffin.features.history import history_features
from tiffin.jobs.batch import CHUNK_ROWS
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage.champion import serving_models
from tiffin.storage.modelstore import LoadedModel, ModelStore

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/bench"
COPIES = 58
PG_ADMIN = os.environ.get("TIFFIN_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def million_rows(seed_file: Path) -> pd.DataFrame:
    raw = pd.read_csv(seed_file)
    days = pd.to_datetime(raw["dteday"])
    copies = [raw.assign(dteday=(days + pd.Timedelta(weeks=105 * k)).dt.strftime("%Y-%m-%d")) for k in range(COPIES)]
    return pd.concat(copies, ignore_index=True)


def in_memory_rows_per_s(loaded: LoadedModel, canonical: pd.DataFrame, rounds: int = 2) -> dict:
    """The fastest exact scorer the project has on canonical rows already in memory (history features, if any,
    attached beforehand): the stock `pipeline.predict` (OpenMP's default, a thread a core) and the batch's own
    `Scorer` on one OpenMP thread (issue 18: on this shared machine twice as fast as the stock call), each on the
    whole frame and in the batch's chunks (on a machine of 2026-12-07, 1.3-1.6 x as fast as the whole frame: its
    intermediate arrays stay in cache); the fastest of `rounds` rounds of each is the baseline, so that a round
    slowed by the machine makes no ratio look better."""
    if loaded.spec.history:
        canonical = canonical.join(history_features(loaded.spec, canonical))
    canonical = canonical.drop(columns=[loaded.spec.target])
    scorer = Scorer.from_model(loaded)

    def pinned(frame: pd.DataFrame) -> object:
        with threadpool_limits(1, user_api="openmp"):
            return scorer.predict(frame)

    def in_chunks(predict: Callable[[pd.DataFrame], object]) -> Callable[[pd.DataFrame], object]:
        return lambda frame: [predict(frame.iloc[i : i + CHUNK_ROWS]) for i in range(0, len(frame), CHUNK_ROWS)]

    ways = {"pipeline": loaded.pipeline.predict, "scorer_one_thread": pinned}
    ways |= {f"{name}_chunks": in_chunks(predict) for name, predict in list(ways.items())}
    found = dict.fromkeys(ways, 0)
    for _ in range(rounds):
        for name, predict in ways.items():
            predict(canonical.head(1000))  # warm
            began = time.perf_counter()
            predict(canonical)
            found[name] = max(found[name], round(len(canonical) / (time.perf_counter() - began)))
    best = max(found, key=found.get)
    return {"rows": len(canonical), "scorer": best, "rows_per_s": found[best], "each": found}


def fastest(*measured: dict) -> dict:
    """The baseline measured before and after the batch runs: the faster (the more demanding ratio)."""
    return max(measured, key=lambda found: found["rows_per_s"])


def run_batch(url: str, end: str | None = None, *options: str) -> dict:
    """`python -m tiffin batch` as a child process: its summary, wall time and peak memory, sampled ten times a
    second: the proportional set size of the batch process and its scoring processes together (they share the
    model's pages, which their resident sizes would each count in full)."""
    command = [sys.executable, "-m", "tiffin", "batch", "--db", url, *(["--end", end] if end else []), *options]
    began = time.perf_counter()
    child = psutil.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    peak = 0
    while child.poll() is None:
        with contextlib.suppress(psutil.Error):
            peak = max(peak, sum(p.memory_full_info().pss for p in [child, *child.children(recursive=True)]))
        time.sleep(0.1)  # reading a process's PSS costs the kernel about 2.5 ms: not every 20 ms
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
        "peak_pss_mib": round(peak / 2**20),
    }


def reset_outputs(url: str) -> None:
    engine = sa.create_engine(url)
    with engine.begin() as connection:
        for table in ("predictions", "prediction_rejects", "batch_runs", "batch_watermarks", "prediction_log"):
            connection.execute(sa.text(f'DROP TABLE IF EXISTS "{table}"'))
    engine.dispose()


def seeded(url: str, rows: pd.DataFrame, spec: DatasetSpec) -> float:
    began = time.perf_counter()
    db.seed(db.engine_for(url), spec, rows)
    return round(time.perf_counter() - began, 1)


def materialized(url: str, spec: DatasetSpec) -> dict:
    """`features materialize`: all rows into an empty table, again (nothing new), then the latest day alone."""
    engine, timings = db.engine_for(url), {}
    _, latest = db.window_span(engine, spec)
    last_day = str(latest)[:10]
    for name, start in (("all_rows", None), ("all_rows_again", None), ("latest_day", last_day)):
        began = time.perf_counter()
        done = store.materialize(engine, spec, start, None)
        timings[name] = {"points": done.points, "written": done.written,
                         "seconds": round(time.perf_counter() - began, 1)}  # fmt: skip
    engine.dispose()
    return timings


def small_window_peak(url: str, runs: int = 3) -> dict:
    """The first six copies (~104,000 rows), run `runs` times from empty outputs: the run with the highest peak. A
    run of 1.6 s is sampled 16 times, and one run's peak varied by 80 MiB between runs of `make bench`
    (2026-12-08), which made the memory goal's ratio look worse than the process was. The 1 M-row run lasts 8-12 s
    (about 100 samples): its peak moved by 9 MiB between the same runs."""
    found = []
    for _ in range(runs):
        reset_outputs(url)
        found.append(run_batch(url, end="2022-12-31"))
    return max(found, key=lambda run: run["peak_pss_mib"]) | {"peaks_mib": [run["peak_pss_mib"] for run in found]}


def measure(url: str, rows: pd.DataFrame, spec: DatasetSpec, row_only: str | None) -> dict:
    seed_seconds = seeded(url, rows, spec)
    features = materialized(url, spec) if spec.history else None
    small = small_window_peak(url)
    reset_outputs(url)
    full = run_batch(url)
    again = run_batch(url)  # nothing left to score: the cost of an idempotent re-run
    reset_outputs(url)
    unlogged = run_batch(url, None, "--no-log")  # what writing the prediction log costs
    reset_outputs(url)
    one_process = run_batch(url, None, "--processes", "1")  # the model in the batch process itself
    reset_outputs(url)
    threads = run_batch(url, None, "--threads", "2")  # OpenMP's own default here: a thread a core (not pinned)
    found = {"seed_seconds": seed_seconds, "window_100k": small, "window_1m": full, "rerun": again,
             "window_1m_unlogged": unlogged, "window_1m_one_process": one_process,
             "window_1m_two_threads": threads}  # fmt: skip
    if row_only:
        reset_outputs(url)
        found |= {"materialize": features, "window_1m_row_only": run_batch(url, None, "--model", row_only)}
    return found


def spark_rows_per_s(rows: pd.DataFrame, loaded: LoadedModel, canonical: pd.DataFrame,
                     master: str = "local[2]") -> dict:  # fmt: skip
    """The Spark engine on the same rows from Parquet, in local mode: the overhead a cluster must amortise."""
    try:
        from tiffin.jobs import spark
    except ImportError:
        return {"skipped": "PySpark is not installed (pip install 'tiffin[spark]')"}
    spec, history = loaded.spec, None
    if spec.history:  # the feature table's rows for the window, as `tiffin batch --engine spark` reads them
        history = store.computed(spec, canonical, canonical, None)
    rows = rows.drop(columns=[spec.target, *spec.never_features])  # what arrives before the actual
    with tempfile.TemporaryDirectory() as scratch:
        source = Path(scratch) / "rows.parquet"
        rows.to_parquet(source, index=False, row_group_size=100_000)
        session = spark.session(master, app="tiffin-bench")
        began = time.perf_counter()
        frame = spark.read_parquet(session, str(source), loaded.spec, None, None)
        run = spark.run(frame, loaded, f"{scratch}/out", history=history)
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
    row_only = row_only_model()  # the champion without its history features, when it has some
    plain = ModelStore().load(row_only) if row_only else None
    champion = ModelStore().load(serving_models().champion)
    canonical = Contract(champion.spec).validate(rows).valid  # once: the in-memory runs and Spark's features
    results = {"rows": len(rows), "in_memory": in_memory_rows_per_s(champion, canonical)}
    if row_only:
        results["in_memory_row_only"] = in_memory_rows_per_s(plain, canonical)
    print(f"in memory: {results['in_memory']}", flush=True)
    with tempfile.TemporaryDirectory() as scratch:
        results["sqlite"] = measure(f"sqlite:///{scratch}/bench.db", rows, champion.spec, row_only)
    print(f"sqlite: {results['sqlite']}", flush=True)
    admin = sa.create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT")
    name = f"tiffin_bench_{os.getpid()}"
    with admin.connect() as connection:
        connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        pg_url = sa.engine.make_url(PG_ADMIN).set(database=name).render_as_string(False)
        results["postgresql"] = measure(pg_url, rows, champion.spec, row_only)
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    print(f"postgresql: {results['postgresql']}", flush=True)
    results["spark"] = spark_rows_per_s(rows, champion, canonical)
    print(f"spark: {results['spark']}", flush=True)
    results["in_memory"] = fastest(results["in_memory"], in_memory_rows_per_s(champion, canonical))
    print(f"in memory, the faster of before and after: {results['in_memory']}", flush=True)
    if row_only:
        again = in_memory_rows_per_s(plain, canonical)
        results["in_memory_row_only"] = fastest(results["in_memory_row_only"], again)
    (OUT / "batch.json").write_text(json.dumps(results, indent=2) + "\n")
    (OUT / "batch.md").write_text(table(results))
    print(table(results))


def table(results: dict) -> str:
    memory = results["in_memory"]["rows_per_s"]
    lines = [
        "| 1,000,000 rows | rows/s | vs in-memory | peak PSS, 1 M rows | peak PSS, 104 k rows | re-run (nothing new) |",
        "|---|---|---|---|---|---|",
        f"| in memory: the fastest exact scorer ({results['in_memory']['scorer']}) | {memory:,} | 1.00 | | | |",
    ]
    for name in ("sqlite", "postgresql"):
        run = results[name]
        full = run["window_1m"]
        lines.append(
            f"| batch, {name} -> {name} (read, contract, score, write) | {full['rows_per_s']:,} | "
            f"{full['rows_per_s'] / memory:.2f} | {full['peak_pss_mib']} MiB | "
            f"{run['window_100k']['peak_pss_mib']} MiB | {run['rerun']['job_seconds']} s |"
        )
        if "window_1m_unlogged" in run:
            bare = run["window_1m_unlogged"]
            lines.append(f"| the same without the prediction log (`--no-log`) | {bare['rows_per_s']:,} | "
                         f"{bare['rows_per_s'] / memory:.2f} | {bare['peak_pss_mib']} MiB | | |")  # fmt: skip
        if "window_1m_one_process" in run:
            alone = run["window_1m_one_process"]
            lines.append(f"| the model in the batch process, no scoring processes (`--processes 1`) | "
                         f"{alone['rows_per_s']:,} | {alone['rows_per_s'] / memory:.2f} | {alone['peak_pss_mib']} MiB "
                         "| | |")  # fmt: skip
        if "window_1m_row_only" in run:
            plain, own = run["window_1m_row_only"], results["in_memory_row_only"]["rows_per_s"]
            lines.append(f"| the row-only model (vs its own in-memory, {own:,}) | {plain['rows_per_s']:,} | "
                         f"{plain['rows_per_s'] / own:.2f} | {plain['peak_pss_mib']} MiB | | |")  # fmt: skip
        if "window_1m_two_threads" in run:
            two = run["window_1m_two_threads"]
            lines.append(f"| the model on 2 OpenMP threads in one process (`--threads 2`) | {two['rows_per_s']:,} | "
                         f"{two['rows_per_s'] / memory:.2f} | {two['peak_pss_mib']} MiB | | |")  # fmt: skip
    if "rows_per_s" in results.get("spark", {}):
        spark = results["spark"]
        lines.append(f"| batch, Spark `{spark['master']}`, Parquet -> Parquet (session already up) | "
                     f"{spark['rows_per_s']:,} | {spark['rows_per_s'] / memory:.2f} | | | |")  # fmt: skip
    return "\n".join(lines) + "\n" + materialize_table(results)


def materialize_table(results: dict) -> str:
    """`tiffin features materialize` on the 1 M rows (58 series), per database."""
    if "materialize" not in results["sqlite"]:
        return ""
    lines = ["", "| materialize, 1,000,000 rows | points | written | seconds |", "|---|---|---|---|"]
    for name in ("sqlite", "postgresql"):
        for step, label in (("all_rows", "every row, empty table"), ("all_rows_again", "again: nothing new"),
                            ("latest_day", "the latest day only (what an hourly run reads)")):  # fmt: skip
            done = results[name]["materialize"][step]
            lines.append(f"| {name}: {label} | {done['points']:,} | {done['written']:,} | {done['seconds']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
