"""Feast benchmark phases. Each phase runs in its own process (see run_all.sh), with cwd = $FEAST_BENCH_DIR.

  bench_feast.py materialize --store sqlite --fv bike_a
  bench_feast.py online      --store sqlite
  bench_feast.py offline     --store sqlite

Results are appended as JSON lines to $FEAST_BENCH_DIR/results/results.jsonl (default /tmp/feast-bench).
"""

import argparse
import json
import math
import os
import random
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
from feast import FeatureStore

B = os.environ.get("FEAST_BENCH_DIR", "/tmp/feast-bench")
FEATURES = ["lag_1", "lag_2", "lag_3", "lag_24", "lag_168", "mean_24"]
RESULTS = f"{B}/results/results.jsonl"


def emit(rec):
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    rec["ts"] = datetime.now(UTC).isoformat(timespec="seconds")
    with open(RESULTS, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(json.dumps(rec), flush=True)


def pct(xs, q):
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def store_for(name):
    return FeatureStore(repo_path=f"{B}/repo_{name}")


def do_materialize(a):
    store = store_for(a.store)
    df = pd.read_parquet(f"{B}/data/{a.fv.replace('_hist', '')}.parquet", columns=["event_timestamp"])
    start = df["event_timestamp"].min().to_pydatetime() - timedelta(hours=1)
    end = df["event_timestamp"].max().to_pydatetime() + timedelta(hours=1)
    runs = []
    for _ in range(max(1, a.repeat)):
        t0 = time.perf_counter()
        store.materialize(start_date=start, end_date=end, feature_views=[a.fv])
        runs.append(time.perf_counter() - t0)
    emit(
        {
            "phase": "materialize",
            "store": a.store,
            "fv": a.fv,
            "rows_in_source": len(df),
            "start": start.isoformat(),
            "end": end.isoformat(),
            "wall_s": round(runs[0], 3),
            "runs_s": [round(x, 3) for x in runs],
            "median_s": round(statistics.median(runs), 3),
        }
    )


def check_latest(store, fv, entities):
    """Online values must equal the latest parquet row per entity."""
    src = pd.read_parquet(f"{B}/data/{fv}.parquet")
    latest = src.sort_values("event_timestamp").groupby("series_id").tail(1).set_index("series_id")
    got = store.get_online_features(
        features=[f"{fv}:{f}" for f in FEATURES], entity_rows=[{"series_id": k} for k in entities]
    ).to_dict()
    bad = 0
    for i, k in enumerate(got["series_id"]):
        for f in FEATURES:
            exp, v = latest.loc[k, f], got[f][i]
            if v is None or not np.isclose(v, exp, equal_nan=True):
                bad += 1
    return bad, {f: got[f][0] for f in FEATURES}


def time_calls(fn, n, warm):
    for _ in range(warm):
        fn()
    out = []
    pc = time.perf_counter_ns
    for _ in range(n):
        t0 = pc()
        fn()
        out.append((pc() - t0) / 1000.0)
    return out


def summarize(us):
    return {
        "n": len(us),
        "p50_us": round(statistics.median(us), 1),
        "p90_us": round(pct(us, 0.90), 1),
        "p99_us": round(pct(us, 0.99), 1),
        "mean_us": round(statistics.fmean(us), 1),
        "min_us": round(min(us), 1),
        "max_us": round(max(us), 1),
    }


def do_online(a):
    store = store_for(a.store)
    rng = random.Random(42)
    for fv in ("bike_a", "bike_b"):
        ents = [0] if fv == "bike_a" else list(range(100))
        bad, sample = check_latest(store, fv, ents)
        emit({"phase": "online_check", "store": a.store, "fv": fv, "mismatches": bad, "sample_entity0": sample})
    refs_a = [f"bike_a:{f}" for f in FEATURES]
    refs_b = [f"bike_b:{f}" for f in FEATURES]

    # (1) one entity, dataset (a): series 0
    us = time_calls(
        lambda: store.get_online_features(features=refs_a, entity_rows=[{"series_id": 0}]).to_dict(), a.n, a.warm
    )
    emit({"phase": "online", "store": a.store, "case": "1 entity, fv bike_a (series 0)", **summarize(us)})

    # (2) one entity, dataset (b): random series each call
    ks = [rng.randrange(100) for _ in range(a.n + a.warm)]
    it = iter(ks)
    us = time_calls(
        lambda: store.get_online_features(features=refs_b, entity_rows=[{"series_id": next(it)}]).to_dict(), a.n, a.warm
    )
    emit({"phase": "online", "store": a.store, "case": "1 entity, fv bike_b (random series)", **summarize(us)})

    # (3) batch of 100 entities, dataset (b)
    rows = [{"series_id": k} for k in range(100)]
    us = time_calls(
        lambda: store.get_online_features(features=refs_b, entity_rows=rows).to_dict(), a.n_batch, a.warm_batch
    )
    emit({"phase": "online", "store": a.store, "case": "100 entities, fv bike_b", **summarize(us)})


def do_online_hist(a):
    """Extra: lookups by (series_id, hour_key) in the full-history views (any hour, not just latest)."""
    store = store_for(a.store)
    rng = random.Random(7)
    for fv, nser in (("bike_a_hist", 1), ("bike_b_hist", 100)):
        src = pd.read_parquet(f"{B}/data/{fv[:-5]}.parquet", columns=["series_id", "hour_key", *FEATURES])
        keys = src[["series_id", "hour_key"]].to_numpy()
        refs = [f"{fv}:{f}" for f in FEATURES]
        # correctness spot-check on 200 random rows
        idx = [rng.randrange(len(src)) for _ in range(200)]
        got = store.get_online_features(
            features=refs, entity_rows=[{"series_id": int(keys[i][0]), "hour_key": int(keys[i][1])} for i in idx]
        ).to_dict()
        bad = sum(
            1
            for j, i in enumerate(idx)
            for f in FEATURES
            if (got[f][j] is None and not np.isnan(src[f].iat[i]))
            or (got[f][j] is not None and not np.isclose(got[f][j], src[f].iat[i], equal_nan=True))
        )
        nulls = sum(1 for j in range(len(idx)) if got["lag_1"][j] is None)
        emit(
            {
                "phase": "online_hist_check",
                "store": a.store,
                "fv": fv,
                "checked": len(idx),
                "mismatches": bad,
                "rows_returned_none_lag_1": nulls,
            }
        )
        it = iter([keys[rng.randrange(len(src))] for _ in range(a.n + a.warm)])

        def one(it=it, refs=refs):
            k = next(it)
            store.get_online_features(
                features=refs, entity_rows=[{"series_id": int(k[0]), "hour_key": int(k[1])}]
            ).to_dict()

        emit(
            {
                "phase": "online_hist",
                "store": a.store,
                "case": f"1 random (series,hour), {fv}",
                **summarize(time_calls(one, a.n, a.warm)),
            }
        )
        if nser == 100:
            batches = iter(
                [
                    [{"series_id": int(k[0]), "hour_key": int(k[1])} for k in keys[rng.sample(range(len(src)), 100)]]
                    for _ in range(a.n_batch + a.warm_batch)
                ]
            )
            us = time_calls(
                lambda refs=refs, batches=batches: store.get_online_features(
                    features=refs, entity_rows=next(batches)
                ).to_dict(),
                a.n_batch,
                a.warm_batch,
            )
            emit({"phase": "online_hist", "store": a.store, "case": f"100 random (series,hour), {fv}", **summarize(us)})


def do_offline(a):
    store = store_for(a.store)
    src = pd.read_parquet(f"{B}/data/bike_a.parquet")
    entity_df = src[["series_id", "event_timestamp"]].copy()
    refs = [f"bike_a:{f}" for f in FEATURES]

    def run_once():
        if not a.chunk:
            return store.get_historical_features(entity_df=entity_df, features=refs).to_df()
        parts = []
        for i in range(0, len(entity_df), a.chunk):
            parts.append(
                store.get_historical_features(
                    entity_df=entity_df.iloc[i : i + a.chunk].reset_index(drop=True), features=refs
                ).to_df()
            )
        return pd.concat(parts, ignore_index=True)

    t0 = time.perf_counter()
    res = run_once()
    wall = time.perf_counter() - t0
    res = res.sort_values("event_timestamp").reset_index(drop=True)
    exp = src.sort_values("event_timestamp").reset_index(drop=True)
    same_ts = bool((res["event_timestamp"].values == exp["event_timestamp"].values).all())
    per_col = {}
    for f in FEATURES:
        r, e = res[f].astype("float64").to_numpy(), exp[f].to_numpy()
        eq = (r == e) | (np.isnan(r) & np.isnan(e))
        per_col[f] = {
            "mismatch": int((~eq).sum()),
            "nan_expected": int(np.isnan(e).sum()),
            "nan_got": int(np.isnan(r).sum()),
        }
    # Does the PIT join take the row AT the event timestamp (not t-1h)?  Compare with a shifted copy.
    prev = exp[FEATURES].shift(1).to_numpy()
    at_prev = int(
        np.all((res[FEATURES].to_numpy() == prev) | (np.isnan(prev) & np.isnan(res[FEATURES].to_numpy())), axis=1).sum()
    )
    emit(
        {
            "phase": "offline",
            "store": a.store,
            "offline_store": store.config.offline_store.type,
            "chunk": a.chunk,
            "rows": len(res),
            "wall_s": round(wall, 3),
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024,
            "timestamps_identical": same_ts,
            "exact_match_all": all(v["mismatch"] == 0 for v in per_col.values()),
            "per_feature": per_col,
            "rows_equal_to_previous_hour_row": at_prev,
            "result_columns": list(res.columns),
        }
    )
    if a.repeat:
        ts = []
        for _ in range(a.repeat):
            t0 = time.perf_counter()
            run_once()
            ts.append(time.perf_counter() - t0)
        emit(
            {
                "phase": "offline_repeat",
                "store": a.store,
                "chunk": a.chunk,
                "runs_s": [round(x, 3) for x in ts],
                "median_s": round(statistics.median(ts), 3),
            }
        )


def main():
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["materialize", "online", "online_hist", "offline"])
    p.add_argument("--store", required=True, choices=["sqlite", "redis", "postgres", "duckdb"])
    p.add_argument("--fv", default="bike_a", choices=["bike_a", "bike_b", "bike_a_hist", "bike_b_hist"])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--warm", type=int, default=100)
    p.add_argument("--n-batch", type=int, default=500)
    p.add_argument("--warm-batch", type=int, default=50)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument(
        "--chunk", type=int, default=0, help="offline: split entity_df into chunks of this many rows (0 = one call)"
    )
    a = p.parse_args()
    phases = {"materialize": do_materialize, "online": do_online, "online_hist": do_online_hist, "offline": do_offline}
    phases[a.phase](a)


if __name__ == "__main__":
    sys.exit(main())
