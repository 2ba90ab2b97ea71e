"""`make bench`: the service against a no-op BentoML service and the stock pipeline, in one run.

Throughput with wrk (native, 32 connections), latency with Locust at a constant offered load, all on
127.0.0.1 and bounded in time. Writes reports/bench/results.json and reports/bench/table.md.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import joblib
import pandas as pd
import sqlalchemy as sa

from benchmarks.models import row_only_model
from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.jobs.overload import OverloadResult, overload
from tiffin.serving.openapi import request_json
from tiffin.serving.server import BentoServer
from tiffin.storage import database, settings
from tiffin.storage.champion import serving_models
from tiffin.storage.settings import load_params

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/bench"
SECONDS = int(os.environ.get("BENCH_SECONDS", "10"))
CONNECTIONS = 32
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "3"))  # interleaved no-op / Tiffin rounds
OFFERED_RATE = 300  # requests/s for the latency run
MULTI_ROWS = 1_000


def wrk(url: str, body: Path, connections: int, seconds: int) -> dict:
    """Requests/s and latency percentiles from wrk; non-2xx answers are counted, not hidden."""
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: `apt-get install wrk` (make bench does this on Debian)")
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(ROOT / "benchmarks/post.lua"), url],
        env={**os.environ, "BODY_FILE": str(body)},
        capture_output=True,
        text=True,
        check=True,
    )
    text = done.stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    return {"requests_per_s": round(rate, 1), "p50_ms": _latency(text, "50"), "p99_ms": _latency(text, "99"),
            "non_2xx": int(errors.group(1)) if errors else 0}  # fmt: skip


def _latency(text: str, percentile: str) -> float:
    value, unit = re.search(rf"^\s+{percentile}%\s+([\d.]+)(us|ms|s)\s*$", text, re.M).groups()
    return round(float(value) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[unit], 2)


def locust_at_constant_rate(url: str, body: Path, rate: int, seconds: int) -> dict:
    """p50/p95/p99 of single-record requests at `rate` requests/s (Locust, constant throughput).

    Users are spawned over two seconds and statistics reset after: users started together send in
    lock-step, so the offered load would arrive as bursts (and measure Locust's queue, not ours).
    """
    users, per_user = 20, rate / 20
    prefix = OUT / "locust_constant_rate"
    subprocess.run(
        [str(Path(sys.executable).parent / "locust"), "-f", str(ROOT / "benchmarks/locust_constant_rate.py"),
         "--headless", "-u", str(users), "-r", str(users // 2), "--reset-stats", "-t", f"{seconds + 2}s",
         "--host", url, "--csv", str(prefix), "--only-summary", "--loglevel", "WARNING"],
        env={**os.environ, "BODY_FILE": str(body), "RATE_PER_USER": str(per_user)},
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    with open(f"{prefix}_stats.csv") as handle:
        total = next(row for row in csv.DictReader(handle) if row["Name"] == "Aggregated")
    return {"offered_per_s": rate, "achieved_per_s": round(float(total["Requests/s"]), 1),
            "p50_ms": float(total["50%"]), "p95_ms": float(total["95%"]), "p99_ms": float(total["99%"]),
            "failures": int(total["Failure Count"])}  # fmt: skip


def request_bodies(tmp: Path) -> tuple[Path, Path, pd.DataFrame, object]:
    """One record and 1,000 records from the end of the test period, as clients send them: the latest hours, the
    real-time case, whose history the service holds."""
    spec = load_spec(ROOT / load_params(ROOT / "params.yaml")["spec"])
    test = pd.read_parquet(ROOT / "data/split/test.parquet")
    records = json.loads(request_json(test[spec.input_columns], spec))
    single, multi = tmp / "single.json", tmp / "multi.json"
    single.write_text(json.dumps({"rows": records[-1:]}))
    multi.write_text(json.dumps({"rows": (records * 2)[-MULTI_ROWS:]}))
    return single, multi, test, spec


def fit_stock_pipeline(spec: object, tmp: Path) -> Path:
    from benchmarks.stock import stock_pipeline

    train = Contract(spec).validate(pd.read_parquet(ROOT / "data/split/train.parquet")).valid
    train["dteday"] = train["dteday"].dt.strftime("%Y-%m-%d")
    path = tmp / "stock.joblib"
    joblib.dump(stock_pipeline(spec).fit(train, train[spec.target]), path)
    return path


def started(target: str, env: dict, name: str | None = None) -> BentoServer:
    """A server for `target`, ready and warmed up (both workers)."""
    server = BentoServer(target, cwd=ROOT, env=env, log=OUT / f"{name or target.split(':')[1]}.log")
    try:
        server.wait_ready()
    except BaseException:
        server.stop()
        raise
    print(f"  {name or target}: ready in {server.ready_after:.1f} s", flush=True)
    wrk(server.url, Path(env["BENCH_SINGLE"]), CONNECTIONS, 2)
    return server


def measure(server: BentoServer, single: Path, multi: Path, latency: bool, single_run: dict | None = None,
            multi_run: dict | None = None) -> dict:  # fmt: skip
    """A running server's figures; `single_run` and `multi_run` when they were measured interleaved."""
    result = {
        "ready_s": round(server.ready_after, 1),
        "worker_rss_mib": [round(m) for m in server.worker_rss_mib()],
        # Best of two: the machine also runs the load generator, and a run can catch a hiccup.
        "single": single_run
        or max(
            (wrk(server.url, single, CONNECTIONS, SECONDS) for _ in range(2)), key=lambda run: run["requests_per_s"]
        ),
        "multi": dict(multi_run or wrk(server.url, multi, 4, SECONDS)),
    }
    result["multi"]["rows_per_s"] = round(result["multi"]["requests_per_s"] * MULTI_ROWS)
    if latency:
        result["latency_at_constant_rate"] = locust_at_constant_rate(server.url, single, OFFERED_RATE, 2 * SECONDS)
    return result


def interleaved(servers: dict[str, BentoServer], body: Path, rounds: int, connections: int = CONNECTIONS) -> dict:
    """Throughput of each server in turn for `body`, `rounds` times; the ratio of each to the first, per round.

    The machine's speed drifts by several percent over minutes (the no-op alone has ranged 1,505-1,645 req/s),
    so a ratio of two runs minutes apart measures the drift; runs side by side in each round, and the median of
    the rounds' ratios, do not.
    """
    runs = {name: [] for name in servers}
    for _ in range(rounds):
        for name, server in servers.items():
            runs[name].append(wrk(server.url, body, connections, SECONDS))
    base, *others = servers
    ratios = {
        name: [round(b["requests_per_s"] / a["requests_per_s"], 3) for a, b in zip(runs[base], runs[name], strict=True)]
        for name in others
    }
    return {"runs": runs, "ratios": ratios, "median_ratio": {name: statistics.median(r) for name, r in ratios.items()}}


def median_run(runs: list[dict]) -> dict:
    return sorted(runs, key=lambda run: run["requests_per_s"])[len(runs) // 2]


def table(results: dict) -> str:
    """The services side by side; the row-only column when the champion has history features."""
    services = [("Tiffin (champion)", results["tiffin"])]
    if "tiffin_row_only" in results:
        services.append(("Tiffin, row-only model", results["tiffin_row_only"]))
    services += [("no-op BentoML", results["noop"]), ("stock Pipeline", results["stock"])]
    ratios, rate = results["ratios"], results["tiffin"]["latency_at_constant_rate"]
    verdict = f"{ratios['vs_noop']:.2f} x no-op (target >= 0.75)"
    if "row_only_vs_noop" in ratios:
        verdict += f", row-only {ratios['row_only_vs_noop']:.2f} x"
    lines = [
        ("Single-record requests/s, 32 connections (wrk)", lambda r: f"{r['single']['requests_per_s']:,.0f}",
         f"{verdict}; {ratios['vs_stock']:.1f} x stock (target >= 4)"),
        ("p99 at 32 connections, ms (wrk)", lambda r: r["single"]["p99_ms"], ""),
        (f"p50 / p95 / p99 at {rate['offered_per_s']} requests/s, ms (Locust)", _constant_rate, "p99 target < 50 ms"),
        ("Rows/s in requests of 1,000 rows (wrk, 4 connections)", lambda r: f"{r['multi']['rows_per_s']:,}",
         f"{ratios['multi_vs_stock']:.2f} x stock, interleaved (target >= 2)"),
        ("Start to ready, s", lambda r: r["ready_s"], "target < 10"),
        ("Memory per worker, MiB (RSS)", lambda r: "/".join(map(str, r["worker_rss_mib"])), ""),
    ]  # fmt: skip
    out = [f"| | {' | '.join(name for name, _ in services)} | |", "|---" * (len(services) + 2) + "|"]
    for label, cell, note in lines:
        out.append(f"| {label} | {' | '.join(str(cell(run)) for _, run in services)} | {note} |")
    return "\n".join(out) + "\n"


def _constant_rate(run: dict) -> str:
    rate = run.get("latency_at_constant_rate")
    return f"{rate['p50_ms']:g} / {rate['p95_ms']:g} / {rate['p99_ms']:g}" if rate else ""


def logging_table(results: dict) -> str:
    """What the prediction log and shadow scoring cost the API, against the same service without them."""
    base = results["tiffin_unlogged"]
    lines = ["| Tiffin with | requests/s (wrk, 32 conn.) | vs unlogged | p99 at 300/s, ms (Locust) | rows logged |",
             "|---|---|---|---|---|"]  # fmt: skip
    for key, label in (("tiffin_unlogged", "no prediction log"), ("tiffin", "log sample 0.1 (default)"),
                       ("tiffin_shadow", "log sample 1.0 + a challenger in shadow")):  # fmt: skip
        run = results[key]
        ratio = run["single"]["requests_per_s"] / base["single"]["requests_per_s"]
        lines.append(f"| {label} | {run['single']['requests_per_s']:,.0f} | {ratio:.2f} x | "
                     f"{run['latency_at_constant_rate']['p99_ms']:g} | {run.get('rows_logged', 0):,} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def logged_rows(url: str) -> int:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar_one()
    except sa.exc.OperationalError:
        return 0
    finally:
        engine.dispose()


def size_bodies(tmp: Path, sizes: list[int]) -> dict[int, Path]:
    """A request of each size, the latest records of the test period (repeated past its length)."""
    spec = load_spec(ROOT / load_params(ROOT / "params.yaml")["spec"])
    test = pd.read_parquet(ROOT / "data/split/test.parquet")
    records = json.loads(request_json(test[spec.input_columns], spec))
    bodies = {}
    for size in sizes:
        bodies[size] = tmp / f"rows-{size}.json"
        bodies[size].write_text(json.dumps({"rows": (records * (size // len(records) + 1))[-size:]}))
    return bodies


def per_size(sizes: list[int]) -> dict:
    """Rows/s of Tiffin (the champion) and the stock pipeline per request size, side by side and interleaved
    (wrk, 4 connections, `ROUNDS` rounds of `SECONDS`); the ratio is the median of the rounds' ratios."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TIFFIN_API_TOKEN", None)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        bodies = size_bodies(tmp, sizes)
        single, _, _, spec = request_bodies(tmp)
        env |= {"BENCH_STOCK_MODEL": str(fit_stock_pipeline(spec, tmp)), "BENCH_SINGLE": str(single)}
        db_url = database.sqlite_copy(settings.db_url(), tmp, "tiffin")
        results = {}
        with contextlib.ExitStack() as stack:
            servers = {  # the stock pipeline first: the base of the ratios
                "stock": stack.enter_context(started("benchmarks.services:StockPipeline", env, "stock")),
                "tiffin": stack.enter_context(started("service.app:Tiffin", env | {"TIFFIN_DB_URL": db_url}, "tiffin")),
            }
            if before := os.environ.get("BENCH_BEFORE_SRC"):  # another checkout's src/: its code, same run
                path = f"{before}{os.pathsep}{env.get('PYTHONPATH', '')}"
                before_env = env | {"TIFFIN_DB_URL": db_url, "PYTHONPATH": path}
                servers["before"] = stack.enter_context(started("service.app:Tiffin", before_env, "before"))
            for size, body in bodies.items():
                found = interleaved(servers, body, ROUNDS, 4)
                rows = {name: [round(r["requests_per_s"] * size) for r in runs] for name, runs in found["runs"].items()}
                results[size] = {"runs": found["runs"], "rows_per_s": rows, "ratio": found["median_ratio"]["tiffin"]}
                print(f"  {size:>6} rows: Tiffin {rows['tiffin']} rows/s, stock {rows['stock']}: "
                      f"{results[size]['ratio']} x", flush=True)  # fmt: skip
    return results


def size_table(results: dict) -> str:
    names = list(next(iter(results.values()))["rows_per_s"])
    lines = [f"| rows a request | {' | '.join(f'{name} rows/s (rounds)' for name in names)} | Tiffin / stock (median) "
             "| non-2xx |", "|---" * (len(names) + 3) + "|"]  # fmt: skip
    for size, found in results.items():
        cells = " | ".join(" / ".join(f"{v:,}" for v in found["rows_per_s"][name]) for name in names)
        errors = sum(run["non_2xx"] for runs in found["runs"].values() for run in runs)
        lines.append(f"| {int(size):,} | {cells} | **{found['ratio']:.2f} x** | {errors} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", help="only rows/s per request size, Tiffin against the stock pipeline: 1,10,1000")
    sizes = parser.parse_args().sizes
    OUT.mkdir(parents=True, exist_ok=True)
    if sizes:
        results = per_size([int(size) for size in sizes.split(",")])
        (OUT / "sizes.json").write_text(json.dumps(results, indent=2) + "\n")
        (OUT / "sizes.md").write_text(size_table(results))
        print(size_table(results))
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TIFFIN_API_TOKEN", None)
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        single, multi, _, spec = request_bodies(tmp)
        env["BENCH_STOCK_MODEL"] = str(fit_stock_pipeline(spec, tmp))
        env["BENCH_SINGLE"] = str(single)
        began = time.monotonic()
        results = {}
        # The headline ratios, each of two services side by side, interleaved (the default service on a fresh source
        # copy): single records against the no-op, requests of 1,000 rows against the stock pipeline.
        db_url = database.sqlite_copy(settings.db_url(), tmp, "tiffin")
        before = logged_rows(db_url)  # the copied source may hold a log already
        with started("benchmarks.services:NoOp", env, "noop") as noop, \
                started("service.app:Tiffin", env | {"TIFFIN_DB_URL": db_url}, "tiffin") as tiffin, \
                started("benchmarks.services:StockPipeline", env, "stock") as stock:  # fmt: skip
            results["interleaved"] = interleaved({"noop": noop, "tiffin": tiffin}, single, ROUNDS)
            results["interleaved_multi"] = interleaved({"stock": stock, "tiffin": tiffin}, multi, ROUNDS, 4)
            for name, server in (("noop", noop), ("tiffin", tiffin), ("stock", stock)):
                single_run = median_run(results["interleaved"]["runs"][name]) if name != "stock" else None
                multi_run = median_run(results["interleaved_multi"]["runs"][name]) if name != "noop" else None
                results[name] = measure(server, single, multi, latency=name == "tiffin", single_run=single_run,
                                        multi_run=multi_run)  # fmt: skip
        results["tiffin"]["rows_logged"] = logged_rows(db_url) - before
        # The prediction log (sampled, on a thread) and shadow scoring, each against the unlogged service.
        shadow = {
            "TIFFIN_LOG_SAMPLE": "1",
            "TIFFIN_CHALLENGER": serving_models().champion,
        }  # the same model: the same cost
        runs = [("tiffin_unlogged", {"TIFFIN_LOG_SAMPLE": "0"}), ("tiffin_shadow", shadow)]
        if row_only := row_only_model():  # the champion has history features: the same model without them
            runs.append(("tiffin_row_only", {"TIFFIN_MODEL": row_only, "TIFFIN_CHALLENGER": "none"}))
        for name, extra in runs:
            db_url = database.sqlite_copy(settings.db_url(), tmp, name)
            before = logged_rows(db_url)
            with started("service.app:Tiffin", env | {"TIFFIN_DB_URL": db_url, **extra}, name) as server:
                results[name] = measure(server, single, multi, latency=True)
            results[name]["rows_logged"] = logged_rows(db_url) - before
        # Four times the capacity, with what it takes to shed it (tests/service/test_overload.py checks the bounds).
        records = tmp / "records.json"
        records.write_text(request_json(pd.read_parquet(ROOT / "data/split/test.parquet")[spec.input_columns], spec))
        source = database.sqlite_copy(settings.db_url(), tmp, "overload")
        overload_env = env | {"TIFFIN_LOG_SAMPLE": "0", "TIFFIN_DB_URL": source}
        with BentoServer("service.app:Tiffin", cwd=ROOT, env=overload_env, log=OUT / "overload.log") as server:
            server.wait_ready()
            results["overload"] = asdict(overload(server, records, OUT / "overload"))
    single_rate = results["tiffin"]["single"]["requests_per_s"]
    results["ratios"] = {
        "vs_noop": results["interleaved"]["median_ratio"]["tiffin"],
        "vs_stock": round(single_rate / results["stock"]["single"]["requests_per_s"], 2),
        "multi_vs_stock": results["interleaved_multi"]["median_ratio"]["tiffin"],
    }
    if "tiffin_row_only" in results:
        row_only_rate = results["tiffin_row_only"]["single"]["requests_per_s"]
        results["ratios"]["row_only_vs_noop"] = round(row_only_rate / results["noop"]["single"]["requests_per_s"], 3)
    results["machine"] = {"cpus": os.cpu_count(), "seconds_per_run": SECONDS, "took_s": round(time.monotonic() - began)}
    (OUT / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    tables = table(results) + "\n" + logging_table(results) + "\n" + OverloadResult(**results["overload"]).table()
    (OUT / "table.md").write_text(tables)
    print(tables)


if __name__ == "__main__":
    main()
