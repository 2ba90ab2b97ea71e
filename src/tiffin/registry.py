"""Model I/O over the BentoML model store.

A registered model is a folder in the store holding the fitted pipeline (`model.joblib`) and the
spec it was trained under (`spec.yaml`), so whoever loads it also gets its contract. Its version is
the hash of the pipeline's bytes: reproducing the pipeline registers the same tag. Lineage (git
commit, data snapshot, params, metrics) lives in the store's metadata only, never in a DVC output.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import joblib
import pandas as pd
from sklearn.pipeline import Pipeline

from tiffin.settings import use_project_model_store
from tiffin.spec import DatasetSpec, load_spec

use_project_model_store()
import bentoml  # noqa: E402  (BENTOML_HOME must be set first)
from bentoml.exceptions import NotFound  # noqa: E402

MODEL_FILE = "model.joblib"
SPEC_FILE = "spec.yaml"
REFERENCE_FILE = "reference.parquet"  # training rows and the model's predictions: monitoring's reference


@dataclass(frozen=True)
class LoadedModel:
    tag: str
    pipeline: Pipeline
    spec: DatasetSpec
    metadata: dict[str, Any]
    path: Path  # the model's folder in the store (what a Spark engine ships to its executors)

    def reference(self) -> pd.DataFrame:
        """A sample of the canonical training rows, with the model's own `prediction` of each."""
        if not (self.path / REFERENCE_FILE).exists():
            raise FileNotFoundError(f"{self.tag} was registered without a reference sample: re-register it")
        return pd.read_parquet(self.path / REFERENCE_FILE)


def content_version(model_file: str | Path) -> str:
    """The model's version: the first 16 hex digits of its pipeline file's sha256."""
    return hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:16]


def register(
    model_file: str | Path,
    spec_file: str | Path,
    *,
    name: str,
    metadata: dict[str, Any],
    labels: dict[str, str] | None = None,
    reference: pd.DataFrame | None = None,
) -> tuple[str, bool]:
    """Save the pipeline into the store as `name:<content hash>`; (tag, whether it was new)."""
    tag = f"{name}:{content_version(model_file)}"
    try:
        return str(bentoml.models.get(tag).tag), False
    except NotFound:
        pass
    with bentoml.models.create(tag, labels=labels or {}, metadata=metadata) as model:
        shutil.copyfile(model_file, model.path_of(MODEL_FILE))
        shutil.copyfile(spec_file, model.path_of(SPEC_FILE))
        if reference is not None:
            reference.to_parquet(model.path_of(REFERENCE_FILE), index=False)
    return tag, True


def from_store(model: bentoml.Model) -> LoadedModel:
    """A model already resolved from the store (e.g. a service's `BentoModel`), with its spec."""
    return LoadedModel(
        tag=str(model.tag),
        pipeline=joblib.load(model.path_of(MODEL_FILE)),
        spec=load_spec(model.path_of(SPEC_FILE)),
        metadata=dict(model.info.metadata),
        path=Path(model.path),
    )


def load(tag: str) -> LoadedModel:
    """A registered model with its spec; `name` alone means its latest version."""
    return from_store(bentoml.models.get(tag))


def list_models(name: str | None = None) -> list[bentoml.Model]:
    """Registered models, newest first."""
    models = bentoml.models.list(name)
    return sorted(models, key=lambda m: m.info.creation_time, reverse=True)


def store_path() -> Path:
    return use_project_model_store() / "models"
