"""Issue 18: a batch scores on every core, in processes forked with the model, and writes what one process writes;
on SQLite and PostgreSQL."""

from __future__ import annotations

import pandas as pd
import pytest

from tiffin.jobs.batch import PARTIAL, SUCCESS, BatchJob
from tiffin.jobs.processes import ScoringProcesses
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db

from .test_batch import DAYS, table
from .test_batch_hostile import scorer_pipeline, seeded


@pytest.fixture
def days(bike_raw: pd.DataFrame) -> pd.DataFrame:
    return bike_raw[bike_raw["dteday"].isin(DAYS)].reset_index(drop=True)


def hostile(rows: pd.DataFrame) -> pd.DataFrame:
    """The three days with a bad value in a few rows: an hour of 77, text for a number, a window value that is
    no date."""
    rows = rows.astype(object).copy()
    rows.loc[5, "hr"], rows.loc[30, "temp"], rows.loc[61, "dteday"] = 77, "warm", "someday"
    return rows


def outputs(url: str, model: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A model's predictions (key, event time, prediction, role) and rejects (key, field, value, rule, row hash)."""
    predictions = table(url, "predictions").query("model == @model")
    rejects = table(url, "prediction_rejects").query("model == @model")
    predictions = predictions[["dteday", "hr", "event_time", "prediction", "role"]].astype({"hr": str})
    rejects = rejects[["dteday", "hr", "field", "value", "rule", "row_hash"]]
    return (predictions.sort_values(["dteday", "hr"]).reset_index(drop=True),
            rejects.sort_values(["dteday", "hr", "field"]).reset_index(drop=True))  # fmt: skip


def test_scoring_processes_write_what_one_process_writes(db_url, bike_spec, scorer, days) -> None:
    """Predictions, the challenger's in shadow, rejects and the run's counters: the same with two scoring processes
    (chunks of 7 rows, so that several are in flight at once) as with one; a re-run skips the same rejects."""
    url = seeded(db_url, bike_spec, hostile(days))
    challenger = Scorer(scorer_pipeline(bike_spec, days), bike_spec)
    runs = {}
    for name, processes in (("one", 1), ("two", 2)):
        job = BatchJob(db.engine_for(url), scorer, f"{name}:1", chunk_rows=7, processes=processes,
                       shadow=(f"{name}-shadow:1", challenger))  # fmt: skip
        runs[name] = job.run()
    one, two = runs["one"], runs["two"]
    assert (two.status, two.rows_read, two.rows_scored, two.rows_rejected, two.window_end) == (
        one.status, one.rows_read, one.rows_scored, one.rows_rejected, one.window_end) == (
        PARTIAL, len(days), len(days) - 3, 3, "2012-03-03")  # fmt: skip
    for model in ("{}:1", "{}-shadow:1"):
        expected, found = outputs(url, model.format("one")), outputs(url, model.format("two"))
        pd.testing.assert_frame_equal(found[0], expected[0])  # exact: the same model on the same rows
        pd.testing.assert_frame_equal(found[1], expected[1])
    assert set(outputs(url, "two:1")[1]["rule"]) == {"in_range(0, 23)", "type: number", "type: date (YYYY-MM-DD)"}

    again = BatchJob(db.engine_for(url), scorer, "two:1", processes=2).run()
    assert (again.status, again.rows_read, again.rows_skipped) == (SUCCESS, 0, 3)


def test_a_failure_in_a_scoring_process_fails_the_run_and_keeps_the_chunks_before(db_url, bike_spec, scorer, days):
    """A model that raises on its third chunk, in a scoring process: the run fails with that error, recorded; the
    chunks written before it stay, whole."""
    url = seeded(db_url, bike_spec, days)

    class Failing(Scorer):
        calls = 0

        def predict(self, columns):
            Failing.calls += 1  # counted in each scoring process: each fails on its third chunk
            if Failing.calls == 3:
                raise RuntimeError("the model broke")
            return super().predict(columns)

    job = BatchJob(db.engine_for(url), Failing(scorer.pipeline, bike_spec), "failing:1", chunk_rows=10, processes=2)
    with pytest.raises(RuntimeError, match="the model broke"):
        job.run()
    runs = table(url, "batch_runs")
    assert list(runs["status"]) == ["failed"] and "the model broke" in runs["error"].iloc[0]
    written = len(table(url, "predictions"))
    assert written == runs["rows_scored"].iloc[0] and written % 10 == 0 and written < len(days)


def test_processes_and_threads_do_not_go_together(tmp_path, bike_spec, scorer, days) -> None:
    url = seeded(f"sqlite:///{tmp_path / 'source.db'}", bike_spec, days)
    with pytest.raises(ValueError, match="processes or for threads"):
        BatchJob(db.engine_for(url), scorer, "both:1", processes=2, threads=2)


def _applied(held, n: int) -> tuple[int, int]:
    return held(n)


def test_scoring_processes_hold_what_they_were_forked_with() -> None:
    """Each process holds what it was forked with, never pickled (a lambda cannot be), and runs the tasks sent to
    it with their arguments; the pool can be used again."""
    with ScoringProcesses(lambda n: divmod(n, 7), 2) as processes:
        futures = [processes.submit(_applied, n) for n in range(50)]
        assert [future.result() for future in futures] == [divmod(n, 7) for n in range(50)]
