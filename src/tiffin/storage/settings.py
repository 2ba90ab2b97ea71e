"""Settings from the environment, read when asked (never at import): the database, params and the project.

Each one has a default that works in a checkout; the environment variable overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from tiffin.storage import paths

DEFAULT_DB_URL = "sqlite:///data/tiffin.db"
PROJECT_ROOT = Path(__file__).resolve().parents[3]  # the checkout this package is in (src/tiffin/storage/..)
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the package: a Bento's (and image's) src/


class DatabaseNotSet(LookupError):
    """No database URL outside a checkout: the embedded default would be a file wherever the process runs."""


def in_checkout() -> bool:
    """Whether the working directory is a project checkout (it has dvc.yaml)."""
    return Path(paths.DVC_YAML).exists()


def db_url(override: str | None = None) -> str:
    """The source database: `--db`, else `TIFFIN_DB_URL`, else, in a checkout only, the embedded SQLite file.

    Elsewhere (a served Bento, the container) a relative SQLite file would be created wherever the process
    runs, inside the model store or the image, and what it logs would be lost with it: the URL must be given.
    """
    if url := override or os.environ.get("TIFFIN_DB_URL"):
        return url
    if not in_checkout():
        raise DatabaseNotSet(
            f"no database: set TIFFIN_DB_URL (or --db) to the source database, e.g. postgresql://user@host/db; "
            f"the embedded default {DEFAULT_DB_URL} applies only in a project checkout (a folder with dvc.yaml), "
            f"and {Path.cwd()} is not one"
        )
    return DEFAULT_DB_URL


def params_file() -> Path:
    """`TIFFIN_PARAMS`, else params.yaml in the working directory."""
    return Path(os.environ.get("TIFFIN_PARAMS") or paths.PARAMS)


def load_params(path: str | Path | None = None) -> dict[str, Any]:
    with open(path or params_file(), encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def project_file(relative: Path) -> Path | None:
    """A project file in the working directory if it is a project (has dvc.yaml), else in the
    working directory or the project this package is in (a Bento's source folder)."""
    bases = [Path.cwd()] if in_checkout() else [Path.cwd(), PROJECT_ROOT, SOURCE_ROOT]
    for base in bases:
        if (base / relative).exists():
            return base / relative
    return None


def api_headers() -> dict[str, str]:
    """What a client of the API sends with a JSON body: `TIFFIN_API_TOKEN` as a bearer token, if set."""
    headers = {"Content-Type": "application/json"}
    if token := os.environ.get("TIFFIN_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    return headers


def champion_file() -> Path | None:
    """`TIFFIN_CHAMPION_FILE`, else models/champion.json here or in the project (None: no champion yet)."""
    if override := os.environ.get("TIFFIN_CHAMPION_FILE"):
        return Path(override)
    return project_file(paths.CHAMPION)


def model_store_home() -> Path:
    """The BentoML home whose `models/` is the model store: `BENTOML_HOME`, else the project's `.bentoml/`."""
    return Path(os.environ.get("BENTOML_HOME") or paths.MODEL_STORE).resolve()


def model_store_home_env() -> str:
    """BENTOML_HOME as the environment has it, for messages ('unset': BentoML's default, ~/bentoml)."""
    return os.environ.get("BENTOML_HOME") or "unset"
