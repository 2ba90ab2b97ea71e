#!/bin/bash
# Re-run only the online-latency phases against already-materialized stores (no writes).
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # benchmarks/feast: the scripts live here
B=${FEAST_BENCH_DIR:-/tmp/feast-bench}   # venvs, data, repos, results and logs live here
export FEAST_BENCH_DIR=$B
PY=$B/venv/bin/python; cd $B
for s in ${STORES:-sqlite redis postgres}; do
  echo "=== $s $(uptime)"
  $PY "$HERE/bench_feast.py" online --store $s 2>&1 | grep '"online"' | cut -c1-200
  $PY "$HERE/bench_feast.py" online_hist --store $s 2>&1 | grep '"online_hist"' | cut -c1-200
done
