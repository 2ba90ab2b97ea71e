"""Raw client round-trip floor (no Feast), for context.

redis HGETALL of a Feast key, psycopg SELECT by key, sqlite SELECT. Needs the online stores populated by run_all.sh.
"""

import os
import sqlite3
import statistics
import time

import psycopg
import redis

B = os.environ.get("FEAST_BENCH_DIR", "/tmp/feast-bench")


def t(fn, n=2000, w=100):
    for _ in range(w):
        fn()
    xs = []
    for _ in range(n):
        t0 = time.perf_counter_ns()
        fn()
        xs.append((time.perf_counter_ns() - t0) / 1000)
    xs.sort()
    return f"p50={statistics.median(xs):.1f}us p99={xs[int(0.99 * len(xs))]:.1f}us"


r = redis.Redis(host="127.0.0.1", port=6379, db=5)
k = next(r.scan_iter(count=10))
print("redis HGETALL one feast key:", t(lambda: r.hgetall(k)))
c = psycopg.connect("host=127.0.0.1 dbname=test user=postgres sslmode=disable", autocommit=True)
ek = c.execute("select entity_key from feast_bench.bench_postgres_bike_b limit 1").fetchone()[0]
print(
    "psycopg SELECT rows for one entity_key:",
    t(
        lambda: c.execute(
            "select feature_name, value, event_ts from feast_bench.bench_postgres_bike_b where entity_key=%s", (ek,)
        ).fetchall()
    ),
)
s = sqlite3.connect(f"{B}/repo_sqlite/data/online_store.db")
ek = s.execute("select entity_key from bench_sqlite_bike_b limit 1").fetchone()[0]
print(
    "sqlite SELECT rows for one entity_key:",
    t(
        lambda: s.execute(
            "select feature_name, value, event_ts from bench_sqlite_bike_b where entity_key=?", (ek,)
        ).fetchall()
    ),
)
