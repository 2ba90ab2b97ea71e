"""Compiled-tree libraries against the project's own compiled forest (issue 18), on the champion and the test set.

For each scorer: the largest difference from scikit-learn's `predict` over the test set (the bar: 1e-9), and the
time of one row and of large batches, one thread each, interleaved. treelite imports a fitted
HistGradientBoostingRegressor and tl2cgen compiles it to C with the machine's gcc; lleaves compiles LightGBM
models only (`lleaves.Model(model_file=...)` reads LightGBM's text format), so it cannot take this model.

    uv pip install treelite tl2cgen     # not project dependencies: this comparison only
    python -m benchmarks.trees          # -> reports/bench/trees.json and trees.md
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
from threadpoolctl import threadpool_limits

from tiffin.core.contract import Contract
from tiffin.features.history import history_features
from tiffin.serving.forest import CompiledForest
from tiffin.storage.champion import serving_models
from tiffin.storage.modelstore import ModelStore

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "reports/bench"
SIZES = (1, 100, 1_000, 10_000)


def test_matrix() -> tuple[object, np.ndarray]:
    """The champion's HistGradientBoosting and its input matrix for the test set (history features attached)."""
    loaded = ModelStore().load(serving_models().champion)
    contract = Contract(loaded.spec)
    splits = [contract.validate(pd.read_parquet(ROOT / f"data/split/{s}.parquet")).valid for s in ("train", "test")]
    test = splits[1].reset_index(drop=True)
    if loaded.spec.history:
        test = test.join(history_features(loaded.spec, pd.concat(splits, ignore_index=True), test))
    return loaded.pipeline.named_steps["model"], loaded.pipeline.named_steps["features"].transform(test)


def compiled_libraries(model: object, scratch: Path) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """treelite's interpreter (GTIL) and tl2cgen's compiled library, each as a predict function; empty if absent."""
    try:
        import tl2cgen
        import treelite
    except ImportError:
        print("treelite/tl2cgen not installed: `uv pip install treelite tl2cgen` to compare them")
        return {}
    imported = treelite.sklearn.import_model(model)
    library = scratch / "forest.so"
    began = time.perf_counter()
    tl2cgen.export_lib(imported, toolchain="gcc", libpath=str(library), params={}, nthread=1)
    print(f"  tl2cgen: compiled in {time.perf_counter() - began:.1f} s")
    predictor = tl2cgen.Predictor(str(library), nthread=1)

    def gtil(x: np.ndarray) -> np.ndarray:
        return treelite.gtil.predict(imported, x, nthread=1).ravel()

    def compiled(x: np.ndarray) -> np.ndarray:
        return predictor.predict(tl2cgen.DMatrix(x, dtype="float64")).ravel()

    return {"treelite GTIL": gtil, "tl2cgen (gcc -O3 C)": compiled}


def seconds(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> float:
    """The median of repeated calls, a quarter of a second or more of them."""
    predict(x)
    calls = max(3, int(0.25 / max(1e-6, _once(predict, x))))
    return statistics.median(_once(predict, x) for _ in range(calls))


def _once(predict: Callable[[np.ndarray], np.ndarray], x: np.ndarray) -> float:
    began = time.perf_counter()
    predict(x)
    return time.perf_counter() - began


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    model, matrix = test_matrix()
    forest = CompiledForest(model)
    expected = model.predict(matrix)
    with tempfile.TemporaryDirectory() as scratch, threadpool_limits(1, user_api="openmp"):
        scorers = {"scikit-learn predict": model.predict, "Tiffin CompiledForest": forest.predict}
        scorers |= compiled_libraries(model, Path(scratch))
        one_by_one = {name: np.concatenate([p(row[None, :]) for row in matrix[:300]]) for name, p in scorers.items()}
        results = {
            name: {
                "max_abs_difference": float(np.max(np.abs(predict(matrix) - expected))),
                "max_abs_difference_one_row": float(np.max(np.abs(one_by_one[name] - expected[:300]))),
                "exact": bool(np.array_equal(predict(matrix), expected)),
            }
            for name, predict in scorers.items()
        }
        for size in SIZES:
            x = np.resize(matrix, (size, matrix.shape[1]))
            for _ in range(2):  # interleaved: each scorer once per round, the best round kept
                for name, predict in scorers.items():
                    found = seconds(predict, x) * 1e6
                    results[name][f"us_{size}"] = min(results[name].get(f"us_{size}", found), found)
    (OUT / "trees.json").write_text(json.dumps({"rows": len(matrix), "results": results}, indent=2) + "\n")
    (OUT / "trees.md").write_text(table(results, len(matrix)))
    print(table(results, len(matrix)))


def table(results: dict, rows: int) -> str:
    head = " | ".join(f"{size:,} rows, µs" for size in SIZES)
    lines = [f"| scorer ({rows:,} test rows) | max abs. difference from scikit-learn (batch / one row) | "
             f"bit-identical | {head} |", "|---" * (len(SIZES) + 3) + "|"]  # fmt: skip
    for name, found in results.items():
        times = " | ".join(f"{found[f'us_{size}']:,.0f}" for size in SIZES)
        diff = f"{found['max_abs_difference']:.1e} / {found['max_abs_difference_one_row']:.1e}"
        lines.append(f"| {name} | {diff} | {'yes' if found['exact'] else 'no'} | {times} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
