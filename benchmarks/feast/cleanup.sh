#!/bin/bash
# Remove what the benchmark created outside $FEAST_BENCH_DIR (default /tmp/feast-bench), plus the big sqlite online-store files.
B=${FEAST_BENCH_DIR:-/tmp/feast-bench}   # venvs, data, repos, results and logs live here
redis-cli -n 5 FLUSHDB                      # benchmark used only Redis db 5
psql -h 127.0.0.1 -U postgres -d test -c "DROP SCHEMA IF EXISTS feast_bench CASCADE"   # only schema used
rm -f "$B"/repo_*/data/online_store.db
