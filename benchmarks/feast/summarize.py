"""Print markdown tables from $FEAST_BENCH_DIR/results/results.jsonl (all passes)."""

import collections
import json
import os

B = os.environ.get("FEAST_BENCH_DIR", "/tmp/feast-bench")
with open(f"{B}/results/results.jsonl") as fh:
    rows = [json.loads(line) for line in fh]
mat = collections.defaultdict(list)
onl = collections.defaultdict(list)
for r in rows:
    if r["phase"] == "materialize" and "runs_s" in r:
        mat[(r["store"], r["fv"])].append(r)
    if r["phase"] in ("online", "online_hist"):
        onl[(r["store"], r["case"])].append(r)
print("| store | fv | first run s | runs s |")
for (s, fv), rs in mat.items():
    r = rs[-1]
    print(f"| {s} | {fv} | {r['wall_s']} | {r['runs_s']} |")
print("\n| store | case | pass | p50 | p90 | p99 | mean |")
for (s, c), rs in onl.items():
    for i, r in enumerate(rs, 1):
        print(f"| {s} | {c} | {i} | {r['p50_us']:.0f} | {r['p90_us']:.0f} | {r['p99_us']:.0f} | {r['mean_us']:.0f} |")
