"""Where things live. Every default can be overridden by an environment variable."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///data/tiffin.db"
PARAMS_FILE = Path(os.environ.get("TIFFIN_PARAMS", "params.yaml"))


def db_url(override: str | None = None) -> str:
    """The source database: `--db`, else `TIFFIN_DB_URL`, else the embedded SQLite file."""
    return override or os.environ.get("TIFFIN_DB_URL") or DEFAULT_DB_URL


def use_project_model_store() -> Path:
    """Point BentoML at the project's own store (`.bentoml/`) unless BENTOML_HOME is set.

    Must run before `bentoml` is imported: BentoML reads the variable once, at import.
    """
    os.environ.setdefault("BENTOML_HOME", str(Path(".bentoml").resolve()))
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "True")
    return Path(os.environ["BENTOML_HOME"])
