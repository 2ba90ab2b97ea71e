#!/bin/bash
# Creates $FEAST_BENCH_DIR/repo_{sqlite,redis,postgres,duckdb} (feature_store.yaml + features.py);
# FEAST_BENCH_DIR defaults to /tmp/feast-bench and must be exported the same for `feast apply` (features.py reads it).
set -e
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)   # benchmarks/feast: the scripts live here
B=${FEAST_BENCH_DIR:-/tmp/feast-bench}   # venvs, data, repos, results and logs live here
for s in sqlite redis postgres duckdb; do
  R=$B/repo_$s; mkdir -p $R/data; cp "$HERE/repo_template/features.py" $R/
  case $s in
    duckdb)   OS="  type: sqlite
  path: $R/data/online_store.db";;   # offline-only repo (offline_store: duckdb, needs venv-duckdb)
    sqlite)   OS="  type: sqlite
  path: $R/data/online_store.db";;
    redis)    OS="  type: redis
  connection_string: \"127.0.0.1:6379,db=5\"";;
    postgres) OS="  type: postgres
  host: 127.0.0.1
  port: 5432
  database: test
  db_schema: feast_bench
  user: postgres
  password: \"\"
  sslmode: disable";;
  esac
  cat > $R/feature_store.yaml <<YAML
project: bench_$s
provider: local
registry: $R/data/registry.db
offline_store:
  type: $([ $s = duckdb ] && echo duckdb || echo file)
online_store:
$OS
entity_key_serialization_version: 3
YAML
done
