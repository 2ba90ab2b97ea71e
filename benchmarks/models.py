"""The models `make bench` compares: the champion, and the same model without its history features.

The row-only variant is the champion's spec minus `history` (and its history baseline), fitted the way the train
stage fits it, on the same training split and params, and registered in the project's store: on the example it
is the row-only model the README quotes (the same content hash).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import joblib
import yaml

from tiffin.core.spec import load_spec
from tiffin.modeling.pipeline import build_pipeline
from tiffin.storage.champion import serving_models
from tiffin.storage.files import read_parquet
from tiffin.storage.modelstore import SPEC_FILE, ModelStore
from tiffin.storage.settings import load_params

ROOT = Path(__file__).resolve().parents[1]


def row_only_model() -> str | None:
    """The tag of the champion refitted without history features (None when the champion has none)."""
    store = ModelStore()
    stored = store.get(serving_models().champion)
    document = yaml.safe_load(Path(stored.path_of(SPEC_FILE)).read_text())
    if "history" not in document:
        return None
    del document["history"]
    document.get("evaluation", {}).pop("history_baseline_lag", None)
    with tempfile.TemporaryDirectory() as scratch:
        spec_file, model_file = Path(scratch) / "spec.yaml", Path(scratch) / "model.joblib"
        spec_file.write_text(yaml.safe_dump(document, sort_keys=False))
        spec = load_spec(spec_file)
        train = read_parquet(ROOT / "data/split/train.parquet")
        pipeline = build_pipeline(spec, load_params(ROOT / "params.yaml").get("train") or {})
        joblib.dump(pipeline.fit(train, train[spec.target]), model_file)
        tag, _ = store.register(model_file, spec_file, name=spec.name, metadata={"made_by": "make bench"},
                                labels={"dataset": spec.name})  # fmt: skip
    return tag
