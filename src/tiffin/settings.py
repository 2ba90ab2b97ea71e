"""Where things live. Every default can be overridden by an environment variable."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///data/tiffin.db"
REGISTRATION = Path("models/registration.json")  # written by the register stage
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = Path(os.environ.get("TIFFIN_PARAMS", "params.yaml"))


def db_url(override: str | None = None) -> str:
    """The source database: `--db`, else `TIFFIN_DB_URL`, else the embedded SQLite file."""
    return override or os.environ.get("TIFFIN_DB_URL") or DEFAULT_DB_URL


def registered_tag() -> str | None:
    """The tag the pipeline registered (models/registration.json), here or in the project; None if none."""
    for base in (Path.cwd(), PROJECT_ROOT):
        if (base / REGISTRATION).exists():
            return json.loads((base / REGISTRATION).read_text())["tag"]
    return None


def use_project_model_store() -> Path:
    """Point BentoML at the project's own store (`.bentoml/`) unless BENTOML_HOME is set.

    BentoML reads BENTOML_HOME once. Where it is already imported (under the `bentoml serve` CLI,
    run from the project root), its model store is re-pointed, so plain `bentoml serve` finds the
    model the pipeline registered; elsewhere the variable is set before BentoML reads it.
    """
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    if "BENTOML_HOME" in os.environ:
        return Path(os.environ["BENTOML_HOME"])
    home = Path(".bentoml").resolve()
    os.environ["BENTOML_HOME"] = str(home)
    if "bentoml" in sys.modules and (home / "models").is_dir():
        from bentoml._internal.configuration.containers import BentoMLContainer
        from bentoml._internal.models.model import ModelStore

        BentoMLContainer.model_store.set(ModelStore(home / "models"))
    return home
