"""Model I/O over the BentoML model store.

A registered model is a folder in the store holding the fitted pipeline (`model.joblib`) and the
spec it was trained under (`spec.yaml`), so whoever loads it also gets its contract. Its version is
the hash of the pipeline's bytes: reproducing the pipeline registers the same tag. Lineage (git
commit, data snapshot, params, metrics) lives in the store's metadata only, never in a DVC output.

The store is named explicitly: `ModelStore(home)`, by default `BENTOML_HOME` else the project's
`.bentoml/` (`settings.model_store_home`). It is handed to BentoML's functions with each call; nothing
re-points BentoML's own global store, so import order never decides which store is used.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import bentoml
import joblib
import pandas as pd
from bentoml._internal.models.model import ModelStore as BentoModelStore
from bentoml.exceptions import NotFound
from sklearn.pipeline import Pipeline

from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage import settings

MODEL_FILE = "model.joblib"
SPEC_FILE = "spec.yaml"
REFERENCE_FILE = "reference.parquet"  # training rows and the model's predictions: monitoring's reference
CALIBRATION_FILE = "drift_thresholds.json"  # monitoring's thresholds, calibrated on the reference (may be absent)

__all__ = ["MODEL_FILE", "SPEC_FILE", "LoadedModel", "ModelStore", "NotFound", "content_version", "from_store"]


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

    @property
    def calibration_file(self) -> Path:
        """Where `tiffin monitor calibrate` puts this model's drift thresholds (in its folder of the store)."""
        return self.path / CALIBRATION_FILE


def content_version(model_file: str | Path) -> str:
    """The model's version: the first 16 hex digits of its pipeline file's sha256."""
    return hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:16]


def from_store(model: Any, spec: DatasetSpec | None = None) -> LoadedModel:
    """A model already resolved from a store (a `bentoml.Model`, or a service's `BentoModel`), with its spec
    (`spec`: the one already read from this model's folder)."""
    return LoadedModel(
        tag=str(model.tag),
        pipeline=joblib.load(model.path_of(MODEL_FILE)),
        spec=spec or load_spec(model.path_of(SPEC_FILE)),
        metadata=dict(model.info.metadata),
        path=Path(model.path),
    )


class ModelStore:
    """The models under one BentoML home (`<home>/models`)."""

    def __init__(self, home: str | Path | None = None) -> None:
        self.home = Path(home) if home is not None else settings.model_store_home()
        self.path = self.home / "models"
        self._store = BentoModelStore(self.path)

    def register(
        self,
        model_file: str | Path,
        spec_file: str | Path,
        *,
        name: str,
        metadata: dict[str, Any],
        labels: dict[str, str] | None = None,
        reference: pd.DataFrame | None = None,
    ) -> tuple[str, bool]:
        """Save the pipeline as `name:<content hash>`; (tag, whether it was new)."""
        tag = f"{name}:{content_version(model_file)}"
        try:
            stored = self.get(tag)
        except NotFound:
            pass
        else:
            # The same pipeline under an edited contract (a new rule, say): the served contract is the spec's.
            if Path(stored.path_of(SPEC_FILE)).read_bytes() != Path(spec_file).read_bytes():
                shutil.copyfile(spec_file, stored.path_of(SPEC_FILE))
            return str(stored.tag), False
        with bentoml.models.create(tag, labels=labels or {}, metadata=metadata, _model_store=self._store) as model:
            shutil.copyfile(model_file, model.path_of(MODEL_FILE))
            shutil.copyfile(spec_file, model.path_of(SPEC_FILE))
            if reference is not None:
                reference.to_parquet(model.path_of(REFERENCE_FILE), index=False)
        return tag, True

    def get(self, tag: str) -> bentoml.Model:
        """The stored model (raises `NotFound`); `name` alone means its latest version."""
        return bentoml.models.get(tag, _model_store=self._store)

    def load(self, tag: str) -> LoadedModel:
        """A registered model with its spec; `name` alone means its latest version."""
        return from_store(self.get(tag))

    def list(self, name: str | None = None) -> list[bentoml.Model]:
        """Registered models, newest first."""
        models = bentoml.models.list(name, _model_store=self._store)
        return sorted(models, key=lambda m: m.info.creation_time, reverse=True)

    def __contains__(self, tag: str) -> bool:
        try:
            self.get(tag)
        except NotFound:
            return False
        return True
