"""Settings from the environment, read when asked (never at import): the database, params and the project.

Each one has a default that works in a checkout; the environment variable overrides it. `ENVIRONMENT` is the
one table of the variables Tiffin reads: `env()` reads only those, and the docs' settings reference is made
from it, so a variable cannot be read without being documented.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tiffin.core import params
from tiffin.storage import paths

DEFAULT_DB_URL = "sqlite:///data/tiffin.db"
PROJECT_ROOT = Path(__file__).resolve().parents[3]  # the checkout this package is in (src/tiffin/storage/..)
SOURCE_ROOT = Path(__file__).resolve().parents[2]  # the folder holding the package: a Bento's (and image's) src/


@dataclass(frozen=True)
class Variable:
    """An environment variable Tiffin reads: its default (as text; None: unset), who reads it, and what for."""

    name: str
    default: str | None
    read_by: str
    meaning: str


ENVIRONMENT: tuple[Variable, ...] = (
    Variable("TIFFIN_DB_URL", None, "CLI, API, batch, UI",
             f"SQLAlchemy URL of the source database (rows, history, prediction log, batch tables); in a checkout "
             f"the default is {DEFAULT_DB_URL}, elsewhere (a Bento, the image) it must be set"),
    Variable("TIFFIN_PARAMS", str(paths.PARAMS), "CLI, stages",
             "The params file (the spec it names, each stage's params)"),
    Variable("TIFFIN_CHAMPION_FILE", str(paths.CHAMPION), "CLI, API",
             "The champion file: which model serves, per dataset, and the promotion history"),
    Variable("TIFFIN_DATASET", None, "CLI, API",
             "The dataset whose champion serves (default: the spec params.yaml names, else the registered model's)"),
    Variable("TIFFIN_MODEL", None, "API, load test", "Serve this model (name:version) instead of the champion"),
    Variable("TIFFIN_CHALLENGER", None, "API",
             "Shadow-score this model instead of the champion file's challenger; `none` turns shadow scoring off"),
    Variable("BENTOML_HOME", str(paths.MODEL_STORE), "CLI, API",
             "BentoML's home, whose models/ is the model store (make sets the project's .bentoml/)"),
    Variable("TIFFIN_API_TOKEN", None, "API, clients",
             "When set, every API call but the health and document paths needs `Authorization: Bearer <token>`"),
    Variable("TIFFIN_WORKERS", "2", "API", "Worker processes (one per core serves most)"),
    Variable("TIFFIN_MAX_ROWS", "10000", "API", "Most rows in one request (more: a 400)"),
    Variable("TIFFIN_MAX_BODY_BYTES", str(8 * 1024 * 1024), "API", "Largest request body (larger: a 413)"),
    Variable("TIFFIN_MAX_CONCURRENCY", "32", "API",
             "Requests in progress per worker; beyond it a 429 with Retry-After"),
    Variable("TIFFIN_TIMEOUT_SECONDS", "10", "API", "A request not answered within this is a 504"),
    Variable("TIFFIN_ACCESS_LOG", "false", "API", "BentoML's access log, one line per request (costs throughput)"),
    Variable("TIFFIN_LOG_SAMPLE", "0.1", "API",
             "Share of requests written to the prediction log, 0 to 1 (0: none); the batch runner logs every row"),
    Variable("TIFFIN_LOG_FLUSH_SECONDS", "1.0", "API", "How often the prediction log's thread writes what is queued"),
    Variable("TIFFIN_HISTORY_REFRESH_SECONDS", "10.0", "API",
             "How often a worker looks for a new materialization of history features"),
    Variable("TIFFIN_HISTORY_KEEP_DAYS", "35", "API", "Days of history a worker keeps in memory"),
    Variable("TIFFIN_REPORTS_DIR", str(paths.MONITOR_REPORTS), "API, UI",
             "Where the dashboard reads monitoring reports"),
    Variable("TIFFIN_DASHBOARD_URL", "/dashboard/", "UI", "The monitoring dashboard the web interface links to"),
    Variable("TIFFIN_LOADTEST_RECORDS", None, "load test",
             "Set by `tiffin loadtest` for its Locust users: the JSON file of records they send"),
    Variable("TIFFIN_OVERLOAD_RATE", "0", "load test",
             "Requests a second per Locust user in the overload test (0: as fast as answered)"),
    Variable("TIFFIN_CHROMIUM", "/usr/bin/chromium", "tests", "The Chromium the browser tests drive"),
    Variable("TIFFIN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres", "tests",
             "The PostgreSQL server the tests create their databases on"),
    Variable("TIFFIN_FUZZ_EXAMPLES", None, "tests",
             "Examples per hypothesis property in the fuzz tests (default: each test's own, derandomized in CI)"),
    Variable("TIFFIN_BENCH_PG_URL", None, "benchmarks", "The PostgreSQL server of `make bench`'s batch figures"),
)  # fmt: skip
VARIABLES = {variable.name: variable for variable in ENVIRONMENT}


def env(name: str) -> str | None:
    """The variable as set (an empty value counts as unset), else its documented default."""
    return os.environ.get(name) or VARIABLES[name].default


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
    if url := override or env("TIFFIN_DB_URL"):
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
    return Path(env("TIFFIN_PARAMS"))


def load_params(path: str | Path | None = None, only: tuple[str, ...] | None = None) -> dict[str, Any]:
    """params.yaml (or `path`), checked (`only` those sections): a wrong key or value is a ParamsError naming it."""
    return params.load(path or params_file(), only)


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
    if token := env("TIFFIN_API_TOKEN"):
        headers["Authorization"] = f"Bearer {token}"
    return headers


def champion_file() -> Path | None:
    """`TIFFIN_CHAMPION_FILE`, else models/champion.json here or in the project (None: no champion yet)."""
    if override := os.environ.get("TIFFIN_CHAMPION_FILE"):  # (its default is looked for in the project too)
        return Path(override)
    return project_file(paths.CHAMPION)


def model_store_home() -> Path:
    """The BentoML home whose `models/` is the model store: `BENTOML_HOME`, else the project's `.bentoml/`."""
    return Path(env("BENTOML_HOME")).resolve()


def model_store_home_env() -> str:
    """BENTOML_HOME as the environment has it, for messages ('unset': BentoML's default, ~/bentoml)."""
    return os.environ.get("BENTOML_HOME") or "unset"
