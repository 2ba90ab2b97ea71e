"""`tiffin batch` as a scheduler runs it: a real process, killed mid-run, resumed; exit codes."""

from __future__ import annotations

import json
import random
import subprocess
import time

import pandas as pd
import psutil
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


def test_a_killed_run_leaves_no_scoring_process_behind(reproduced_project: Project, tmp_path, bike_spec, bike_raw):
    """Issue 18: the scoring processes die with the batch process, however it ends (SIGKILL included)."""
    url = seeded_source(f"sqlite:///{tmp_path / 'source.db'}", bike_spec, bike_raw)
    running = batch(reproduced_project, url, "--chunk-rows", str(CHUNK), "--processes", "2", wait=False)
    deadline = time.monotonic() + 120
    while (scalar(url, "SELECT COUNT(*) FROM predictions") or 0) < 3 * CHUNK:
        assert running.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.01)
    scoring = psutil.Process(running.pid).children(recursive=True)
    assert len(scoring) == 2
    running.kill()
    running.wait()
    _, alive = psutil.wait_procs(scoring, timeout=30)
    assert not alive


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


# -- issue 12: faults keep their cause, the dead are marked, one run at a time, clear errors ---------------------


def ledger(url: str) -> pd.DataFrame:
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        runs = pd.read_sql("SELECT * FROM batch_runs ORDER BY started_at", connection)
        scored = pd.read_sql("SELECT run_id, COUNT(*) AS n FROM predictions GROUP BY run_id", connection)
        rejected = pd.read_sql(
            "SELECT run_id, COUNT(*) AS n FROM (SELECT DISTINCT dteday, hr, run_id FROM prediction_rejects) AS r "
            "GROUP BY run_id",
            connection,
        )
    engine.dispose()
    counted = runs.set_index("run_id")
    counted["scored_in_table"] = scored.set_index("run_id")["n"]
    counted["rejected_in_table"] = rejected.set_index("run_id")["n"]
    return counted.fillna({"scored_in_table": 0, "rejected_in_table": 0})


def test_sigkill_at_random_points_then_a_resume_leaves_every_row_once_and_an_honest_ledger(
    reproduced_project: Project, db_url: str, bike_spec, bike_raw
) -> None:
    rows = bike_raw.copy()
    rows.loc[[5, 9000, 17000], "hr"] = ["25", "9pm%a", "1e19"]  # a few rejects among them
    url = seeded_source(db_url, bike_spec, rows)
    for delay in random.Random(12).sample([0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5], 4):  # seeded: the same points each run
        before = scalar(url, "SELECT COUNT(*) FROM predictions") or 0
        running = batch(reproduced_project, url, "--chunk-rows", "50", wait=False)
        # Killed somewhere in read/score/write/commit once it has committed a chunk: timed from its start instead,
        # a kill could come after the end on a fast machine, or before the first read on a slow one.
        deadline = time.monotonic() + 120
        while (scalar(url, "SELECT COUNT(*) FROM predictions") or 0) <= before:
            assert running.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.01)
        time.sleep(delay)
        running.kill()
        running.wait()
    done = batch(reproduced_project, url)
    runs = ledger(url)
    last = runs.iloc[-1]
    assert done.returncode == (3 if last["rows_rejected"] else 0), done.stderr  # partial: it met rejects
    assert last["status"] == ("partial" if last["rows_rejected"] else "success")
    assert (runs["rows_scored"] == runs["scored_in_table"]).all() and (
        runs["rows_rejected"] == runs["rejected_in_table"]
    ).all()  # every run's counters equal what it committed, killed or not
    assert set(runs["status"].iloc[:-1]) <= {"abandoned", "success", "partial"} and "running" not in set(runs["status"])
    assert runs["scored_in_table"].sum() + runs["rejected_in_table"].sum() == len(rows)
    assert runs["rejected_in_table"].sum() == 3


def test_a_second_run_over_the_same_source_exits_busy(reproduced_project: Project, tmp_path, bike_spec, bike_raw):
    from tiffin.jobs.batch import EXIT_BUSY, SourceLock
    from tiffin.storage.database import engine_for

    url = seeded_source(f"sqlite:///{tmp_path / 'busy.db'}", bike_spec, bike_raw.head(200))
    with SourceLock(engine_for(url), "rentals"):  # another run holds the source
        busy = batch(reproduced_project, url)
    assert busy.returncode == EXIT_BUSY and "another batch run is scoring rentals" in busy.stderr
    assert batch(reproduced_project, url).returncode == 0  # free again


@pytest.mark.postgres
def test_a_database_that_goes_away_mid_run_leaves_the_cause_and_no_running_run(
    reproduced_project: Project, postgres_db: str, bike_spec, bike_raw
) -> None:
    url = seeded_source(postgres_db, bike_spec, bike_raw)
    running = batch(reproduced_project, url, "--chunk-rows", "100", wait=False)
    deadline = time.monotonic() + 120
    while (scalar(url, "SELECT COUNT(*) FROM predictions") or 0) < 300:
        assert running.poll() is None and time.monotonic() < deadline, "the run ended before the database went away"
        time.sleep(0.01)
    database = sa.engine.make_url(url).database
    scalar(url, f"SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = '{database}' "
                "AND pid <> pg_backend_pid() AND application_name NOT LIKE 'psql%'")  # fmt: skip
    _, stderr = running.communicate(timeout=120)
    assert running.returncode == 1 and "Traceback" not in stderr.decode()
    runs = ledger(url)
    failed = runs.iloc[0]
    assert failed["status"] == "failed" and "terminat" in failed["error"] and "rollback" not in failed["error"]
    assert failed["rows_scored"] == failed["scored_in_table"] > 0
    resumed = batch(reproduced_project, url)
    assert resumed.returncode == 0, resumed.stderr
    assert ledger(url)["scored_in_table"].sum() == len(bike_raw)


def test_bad_urls_missing_files_and_bad_windows_are_one_line_errors_and_create_nothing(
    reproduced_project: Project, tmp_path, bike_spec, bike_raw
) -> None:
    missing = tmp_path / "typo" / "tiffin.db"
    for url, expected in ((f"sqlite:///{missing}", "no SQLite database"), ("garbage://x", "no database driver"),
                          ("not a url", "not a database URL")):  # fmt: skip
        done = batch(reproduced_project, url)
        assert done.returncode == 1 and expected in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert not missing.parent.exists()
    url = seeded_source(f"sqlite:///{tmp_path / 'w.db'}", bike_spec, bike_raw.head(50))
    backwards = batch(reproduced_project, url, "--start", "2011-01-03", "--end", "2011-01-01")
    assert backwards.returncode == 2 and "after its end" in backwards.stderr
    assert batch(reproduced_project, url, "--chunk-rows", "0").returncode == 2
    assert batch(reproduced_project, url, "--end", "yesterday").returncode == 2
    assert scalar(url, "SELECT COUNT(*) FROM batch_watermarks") is None  # nothing ran: not even the tables
