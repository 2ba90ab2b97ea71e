"""`make bench` (in-process part): the online history lookup and scoring of one record, interleaved.

One record at a time from the end of the test period (the hours a worker's table holds), in this process, no
HTTP: the lookup from the worker's precomputed table, the same lookup computed from its grid (the path for
hours outside the table), and scoring with the champion against scoring with the same model without history
features. Each figure is the median of rounds that alternate between them, so machine noise hits all alike.
Writes reports/bench/lookup.{json,md}.
"""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import pandas as pd

from benchmarks.models import row_only_model
from tiffin.features.online import OnlineHistory
from tiffin.serving.config import ServiceConfig
from tiffin.serving.openapi import request_json
from tiffin.serving.scorer import Scorer
from tiffin.storage import settings
from tiffin.storage.champion import serving_models
from tiffin.storage.database import engine_for
from tiffin.storage.modelstore import ModelStore

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/bench"
RECORDS, ROUNDS, CALLS = 200, 15, 400


def per_call_us(function, records: list) -> float:
    began = time.perf_counter_ns()
    for i in range(CALLS):
        function(records[i % len(records)])
    return (time.perf_counter_ns() - began) / CALLS / 1000


def main() -> None:
    store, tag = ModelStore(), serving_models().champion
    champion = store.load(tag)
    if not champion.spec.history:
        print("the champion has no history features: nothing to measure here")
        return
    config = ServiceConfig.from_env()
    history = OnlineHistory(engine_for(settings.db_url(), must_exist=True), champion.spec,
                            keep=pd.Timedelta(days=config.history_keep_days))  # fmt: skip
    history.refresh(force=True)
    scorer, plain = Scorer.from_model(champion, history), Scorer.from_model(store.load(row_only_model()))
    test = pd.read_parquet(ROOT / "data/split/test.parquet").tail(RECORDS)
    records = json.loads(request_json(test[champion.spec.input_columns], champion.spec))
    columns = [scorer.validator.validate([record])[0] for record in records]
    assert all(history.in_table(c) for c in columns), "the records must be in the table"
    cases = {
        "lookup, precomputed table": history.lookup,
        "lookup, computed from the grid": history.computed,
        "score one record, champion (history)": lambda r: scorer.score([r]),
        "score one record, row-only model": lambda r: plain.score([r]),
    }
    inputs = {name: columns if name.startswith("lookup") else records for name in cases}
    rounds = {name: [] for name in cases}
    for _ in range(ROUNDS):
        for name, function in cases.items():
            rounds[name].append(per_call_us(function, inputs[name]))
    results = {name: round(statistics.median(values), 1) for name, values in rounds.items()}
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "lookup.json").write_text(json.dumps({"model": tag, "median_us": results}, indent=2) + "\n")
    lines = ["| one record, in process | µs (median of rounds) |", "|---|---|"]
    lines += [f"| {name} | {value:g} |" for name, value in results.items()]
    (OUT / "lookup.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
