"""Stage register: put the evaluated pipeline into the BentoML model store, with its lineage.

The tag's version is the pipeline's content hash, so a reproduction registers the same tag. The git
commit and other run facts go to the store's metadata only, never to a DVC output.
"""

import subprocess

import joblib
import pandas as pd

from tiffin import registry
from tiffin.stage import load_params, read_json, read_parquet, sha256_file, start, write_json

MODEL = "models/model.joblib"
REFERENCE_ROWS = 20_000


def git_commit() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True).stdout
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], capture_output=True, text=True)
        return commit.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def reference_sample(rows: int = REFERENCE_ROWS) -> pd.DataFrame:
    """Training rows (a fixed sample) with the model's predictions: what monitoring compares against."""
    train = read_parquet("data/split/train.parquet")
    sample = train.sample(n=min(rows, len(train)), random_state=0).sort_index()
    return sample.assign(prediction=joblib.load(MODEL).predict(sample))


def main() -> None:
    spec, _, log = start("register")
    params = load_params()
    metrics = read_json("eval/metrics.json")
    lineage = {
        "git_commit": git_commit(),
        "data_snapshot_sha256": sha256_file("data/snapshot/rows.parquet"),
        "model_sha256": sha256_file(MODEL),
        "params": params,
        "metrics": {"test": metrics["test"], "baseline": metrics["baseline"]},
        "validation": read_json("eval/validation.json"),
    }
    tag, created = registry.register(
        MODEL, params["spec"], name=spec.name, metadata=lineage, labels={"dataset": spec.name},
        reference=reference_sample(),
    )  # fmt: skip
    log.info("%s %s in %s", "registered" if created else "already registered:", tag, registry.store_path())
    write_json({"tag": tag, "model_sha256": lineage["model_sha256"]}, "models/registration.json")


if __name__ == "__main__":
    main()
