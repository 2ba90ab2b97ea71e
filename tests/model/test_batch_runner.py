"""`tiffin batch` as a scheduler runs it: a real process, killed mid-run, resumed; exit codes."""

from __future__ import annotations

import json
import subprocess
import time

import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.storage import database as db

from ..conftest import Project

pytestmark = pytest.mark.slow
CHUNK = 100


def seeded_source(db_url: str, bike_spec, rows: pd.DataFrame) -> str:
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, rows)
    engine.dispose()
    return db_url


def batch(project: Project, url: str, *args: str, wait: bool = True):
    tag = json.loads((project.path / "models/registration.json").read_text())["tag"]
    command = ["tiffin", "batch", "--db", url, "--model", tag, *args]
    if wait:
        return project.run(*command, check=False)
    return subprocess.Popen(command, cwd=project.path, env=project.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def scalar(url: str, sql: str) -> object:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as connection:
            return connection.execute(sa.text(sql)).scalar()
    except sa.exc.OperationalError:
        return None
    except sa.exc.ProgrammingError:  # PostgreSQL: the table does not exist yet
        return None
    finally:
        engine.dispose()


def test_a_killed_run_leaves_whole_chunks_and_the_next_run_finishes_the_job(
    reproduced_project: Project, db_url: str, bike_spec, bike_raw
) -> None:
    url = seeded_source(db_url, bike_spec, bike_raw)
    running = batch(reproduced_project, url, "--chunk-rows", str(CHUNK), wait=False)
    deadline = time.monotonic() + 120
    while (scalar(url, "SELECT COUNT(*) FROM predictions") or 0) < 3 * CHUNK:
        assert running.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    running.kill()
    running.wait()

    kept = scalar(url, "SELECT COUNT(*) FROM predictions")
    assert kept % CHUNK == 0 and 0 < kept < len(bike_raw)  # whole chunks only
    killed = scalar(url, "SELECT run_id FROM batch_runs WHERE status = 'running'")
    assert scalar(url, f"SELECT rows_scored FROM batch_runs WHERE run_id = '{killed}'") == kept  # the ledger agrees

    resumed = batch(reproduced_project, url)
    assert resumed.returncode == 0, resumed.stderr
    assert f"{len(bike_raw) - kept} scored" in resumed.stdout
    assert scalar(url, "SELECT COUNT(*) FROM predictions") == len(bike_raw)
    assert scalar(
        url, "SELECT COUNT(*) FROM (SELECT dteday, hr FROM predictions GROUP BY dteday, hr, model) AS k"
    ) == len(bike_raw)
    assert scalar(url, f"SELECT COUNT(*) FROM predictions WHERE run_id = '{killed}'") == kept  # earlier rows untouched


def test_exit_codes_tell_success_partial_and_failure_apart(
    reproduced_project: Project, tmp_path, bike_spec, bike_raw
) -> None:
    clean = seeded_source(f"sqlite:///{tmp_path / 'clean.db'}", bike_spec, bike_raw.head(300))
    done = batch(reproduced_project, clean)
    assert done.returncode == 0 and done.stdout.startswith("batch success: 300 scored")

    doctored = bike_raw.head(300).copy()
    doctored.loc[5, "hr"] = "25"
    partial_url = seeded_source(f"sqlite:///{tmp_path / 'partial.db'}", bike_spec, doctored)
    partial = batch(reproduced_project, partial_url)
    assert partial.returncode == 3 and "299 scored, 1 rejected" in partial.stdout

    failed = batch(reproduced_project, f"sqlite:///{tmp_path / 'empty.db'}")
    assert failed.returncode == 1 and "tiffin db seed" in failed.stderr


def test_logs_are_json_lines_when_not_on_a_terminal(reproduced_project: Project, tmp_path, bike_spec, bike_raw) -> None:
    url = seeded_source(f"sqlite:///{tmp_path / 'logs.db'}", bike_spec, bike_raw.head(250))
    done = batch(reproduced_project, url, "--chunk-rows", "100")
    chunks = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert [c["rows"] for c in chunks if c.get("event") == "chunk"] == [100, 100, 50]
