"""Stage register: put the evaluated pipeline into the BentoML model store, with its lineage.

The tag's version is the pipeline's content hash, so a reproduction registers the same tag. The git
commit and other run facts go to the store's metadata only, never to a DVC output.
"""

import subprocess

import joblib
import pandas as pd

from tiffin.cli.stage import start
from tiffin.storage import paths
from tiffin.storage.files import read_json, read_parquet, sha256_file, write_json
from tiffin.storage.modelstore import ModelStore
from tiffin.storage.settings import load_params

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
    train = read_parquet(paths.TRAIN)
    sample = train.sample(n=min(rows, len(train)), random_state=0).sort_index()
    return sample.assign(prediction=joblib.load(paths.MODEL).predict(sample))


def main() -> None:
    spec, _, log = start("register")
    params = load_params()
    metrics = read_json(paths.METRICS)
    lineage = {
        "git_commit": git_commit(),
        "data_snapshot_sha256": sha256_file(paths.SNAPSHOT),
        "model_sha256": sha256_file(paths.MODEL),
        "params": params,
        "metrics": {"test": metrics["test"], "baseline": metrics["baseline"]},
        "validation": read_json(paths.VALIDATION_REPORT),
    }
    store = ModelStore()
    tag, created = store.register(
        paths.MODEL, params["spec"], name=spec.name, metadata=lineage, labels={"dataset": spec.name},
        reference=reference_sample(),
    )  # fmt: skip
    log.info("registered %s in %s" if created else "already registered: %s in %s", tag, store.path)
    write_json({"tag": tag, "model_sha256": lineage["model_sha256"]}, paths.REGISTRATION)


if __name__ == "__main__":
    main()
