"""Where things live. Every default can be overridden by an environment variable."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///data/tiffin.db"
REGISTRATION = Path("models/registration.json")  # written by the register stage
CHAMPION = Path("models/champion.json")  # which model serves (tiffin.promotion), kept in git
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PARAMS_FILE = Path(os.environ.get("TIFFIN_PARAMS", "params.yaml"))


def db_url(override: str | None = None) -> str:
    """The source database: `--db`, else `TIFFIN_DB_URL`, else the embedded SQLite file."""
    return override or os.environ.get("TIFFIN_DB_URL") or DEFAULT_DB_URL


def project_file(relative: Path) -> Path | None:
    """A project file in the working directory if it is a project (has dvc.yaml), else in the
    working directory or the project this package is in (a Bento's source folder)."""
    bases = [Path.cwd()] if Path("dvc.yaml").exists() else [Path.cwd(), PROJECT_ROOT]
    for base in bases:
        if (base / relative).exists():
            return base / relative
    return None


def registered_tag() -> str | None:
    """The tag the pipeline registered (models/registration.json), here or in the project; None if none."""
    path = project_file(REGISTRATION)
    return json.loads(path.read_text())["tag"] if path else None


def champion_file() -> Path | None:
    """TIFFIN_CHAMPION_FILE, else models/champion.json here or in the project (None: no champion yet)."""
    if override := os.environ.get("TIFFIN_CHAMPION_FILE"):
        return Path(override)
    return project_file(CHAMPION)


def serving_tags() -> tuple[str | None, str | None]:
    """(champion, challenger): TIFFIN_MODEL / TIFFIN_CHALLENGER, else models/champion.json.

    Before any promotion the registered model is the champion. TIFFIN_CHALLENGER=none turns shadow
    scoring off.
    """
    path = champion_file()
    state = json.loads(path.read_text()) if path and path.exists() else {}
    champion = os.environ.get("TIFFIN_MODEL") or state.get("champion") or registered_tag()
    challenger = os.environ.get("TIFFIN_CHALLENGER", state.get("challenger") or "")
    return champion, (None if challenger.lower() in ("", "none") else challenger)


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
