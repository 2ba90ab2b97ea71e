"""Shared fixtures: the real databases, and throw-away copies of the project for real DVC runs."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa
import yaml

from tiffin.core.spec import DatasetSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PG_ADMIN_URL = os.environ.get("TIFFIN_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PROJECT_FILES = [
    "dvc.yaml",
    "params.yaml",
    ".dvcignore",
    "pyproject.toml",
    "pipelines",
    "specs",
    "src",
    "service",
    "loadtests",
    "deploy",
    "data/seed",
]


@pytest.fixture(scope="session")
def bike_spec() -> DatasetSpec:
    return load_spec(ROOT / "specs/bike_sharing_rows.yaml")


@pytest.fixture(scope="session")
def bike_raw() -> pd.DataFrame:
    return pd.read_csv(ROOT / "data/seed/bike_sharing_hourly.csv.gz")


@pytest.fixture(scope="session")
def bike_example(bike_spec: DatasetSpec, bike_raw: pd.DataFrame) -> dict:
    """One real record of the example in canonical JSON form: the base that hostile records change."""
    from tiffin.core.contract import Contract

    canonical = Contract(bike_spec).validate(bike_raw.head(50)).valid
    return json.loads(canonical[bike_spec.input_columns].head(1).to_json(orient="records", date_format="iso"))[0]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh PostgreSQL database for this test session, dropped afterwards.

    Under CI=true an unreachable server is a failure, not a skip: those tests are what prove the
    production database works.
    """
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"tiffin_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as unreachable:
        message = f"PostgreSQL is unreachable at {PG_ADMIN_URL}: {unreachable.orig}"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    yield sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as connection:
        connection.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each database test runs on the embedded default and on the production database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'source.db'}"
        return
    yield request.getfixturevalue("postgres_db")


def drop_all_tables(url: str) -> None:
    engine = sa.create_engine(url)
    tables = sa.MetaData()
    tables.reflect(engine)
    tables.drop_all(engine)
    engine.dispose()


@pytest.fixture
def postgres_db(postgres_url: str) -> Iterator[str]:
    """The session's PostgreSQL database for one test, emptied afterwards: each test starts from an empty one."""
    yield postgres_url
    drop_all_tables(postgres_url)


class Project:
    """A copy of the project in a temporary folder, with its own database, store and git repo."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.env = {
            **os.environ,
            "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
            "TIFFIN_DB_URL": f"sqlite:///{path / 'data/tiffin.db'}",
            "BENTOML_HOME": str(path / ".bentoml"),
            "BENTOML_DO_NOT_TRACK": "True",
            "DVC_NO_ANALYTICS": "1",
            "GIT_AUTHOR_NAME": "tiffin-tests",
            "GIT_AUTHOR_EMAIL": "tests@tiffin.invalid",
            "GIT_COMMITTER_NAME": "tiffin-tests",
            "GIT_COMMITTER_EMAIL": "tests@tiffin.invalid",
        }

    def run(self, *args: str, check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, cwd=self.path, env=env or self.env, capture_output=True, text=True, timeout=600)
        if check and done.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}")
        return done

    def set_params(self, **sections: object) -> None:
        """Replace whole sections of params.yaml."""
        params_file = self.path / "params.yaml"
        params = yaml.safe_load(params_file.read_text())
        params.update(sections)
        params_file.write_text(yaml.safe_dump(params, sort_keys=False))

    def read_json(self, name: str) -> dict:
        return json.loads((self.path / name).read_text())

    def commit(self, message: str = "snapshot") -> None:
        self.run("git", "add", "-A")
        self.run("git", "commit", "-q", "-m", message)


def make_project(path: Path) -> Project:
    """A copy of the pipeline and service at `path`, as a git + DVC repo of its own."""
    path.mkdir(parents=True)
    for name in PROJECT_FILES:
        source = ROOT / name
        target = path / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (path / ".gitignore").write_text("/data/tiffin.db\n/.bentoml/\n")
    copy = Project(path)
    copy.run("git", "init", "-q", "-b", "main")
    copy.run("dvc", "init", "-q")
    copy.run("dvc", "config", "core.analytics", "false")
    copy.commit("project copy")
    return copy


@pytest.fixture
def project(tmp_path: Path) -> Project:
    """A fresh copy of the pipeline that the test may change freely."""
    return make_project(tmp_path / "project")


SMALL_WINDOW = {"start": "2011-01-01", "end": "2011-04-30"}
SHARES = {"validation_share": 0.15, "test_share": 0.2}
QUICK_TRAIN = {"max_iter": 60, "learning_rate": 0.1, "random_state": 42}


def small_bike_project(project: Project) -> Project:
    """Seeded, and set to a four-month window and a quick model, so `dvc repro` takes seconds."""
    project.set_params(ingest=SMALL_WINDOW, split=SHARES, train=QUICK_TRAIN)
    project.run("tiffin", "db", "seed")
    return project


@pytest.fixture(scope="session")
def reproduced_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """One small pipeline run for the whole session, with a registered model: do not modify it."""
    project = small_bike_project(make_project(tmp_path_factory.mktemp("reproduced") / "project"))
    project.run("dvc", "repro")
    return project


def monitored_model(tag: str, spec: DatasetSpec, pipeline: object, train: pd.DataFrame, folder: Path) -> object:
    """A registered model as monitoring sees one: its folder holds the reference sample (the training rows with
    the model's predictions), and its test MAE is its error on them."""
    from sklearn.metrics import mean_absolute_error

    from tiffin.storage.modelstore import REFERENCE_FILE, LoadedModel

    predictions = pipeline.predict(train)
    train.assign(prediction=predictions).to_parquet(folder / REFERENCE_FILE, index=False)
    test_mae = mean_absolute_error(train[spec.target], predictions)
    return LoadedModel(tag, pipeline, spec, {"metrics": {"test": {"mae": test_mae}}}, folder)
