"""The batch runner never stalls, never skips, never lies: hostile rows, windows and faults, on SQLite and PostgreSQL.

Each test is one reproduction of issue 12, observed on the tree before the fix.
"""

from __future__ import annotations

import concurrent.futures
from datetime import timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from threadpoolctl import threadpool_info

from tiffin.core.spec import DatasetSpec
from tiffin.jobs.batch import ABANDONED, FAILED, PARTIAL, SUCCESS, WINDOW_UNREADABLE, BatchJob
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage.bulk import BulkConnection
from tiffin.storage.database import WindowError

from .test_batch import DAYS, TAG, job, table


def seeded(url: str, spec: DatasetSpec, rows: pd.DataFrame) -> str:
    db.seed(db.engine_for(url), spec, rows)
    return url


def run_bounded(batch: BatchJob, seconds: float = 60, **window: object):
    """Run with a deadline: a batch that loops forever fails here instead of hanging the suite."""
    pool = concurrent.futures.ThreadPoolExecutor(1)
    future = pool.submit(batch.run, **window)
    try:
        return future.result(timeout=seconds)
    finally:
        pool.shutdown(wait=False)


def every_row_once(url: str, spec: DatasetSpec, rows: int) -> tuple[int, int]:
    """(scored, rejected) keys; each source row is in exactly one of the two tables."""
    key = ", ".join(f'"{k}"' for k in spec.key)
    engine = sa.create_engine(url)
    with engine.connect() as connection:
        scored = connection.execute(sa.text(f"SELECT {key} FROM predictions WHERE model = :m"), {"m": TAG}).all()
        rejected = connection.execute(
            sa.text(f"SELECT DISTINCT {key} FROM prediction_rejects WHERE model = :m"), {"m": TAG}
        ).all()
    engine.dispose()
    as_text = {tuple(map(str, k)) for k in scored}
    assert len(as_text) == len(scored) and not as_text & {tuple(k) for k in rejected}
    assert len(scored) + len(rejected) == rows
    return len(scored), len(rejected)


@pytest.fixture
def days(bike_raw: pd.DataFrame) -> pd.DataFrame:
    return bike_raw[bike_raw["dteday"].isin(DAYS)].reset_index(drop=True).astype(object)


# -- 1. keys are values, never SQL text --------------------------------------------------------------------------


@pytest.mark.parametrize("chunk_rows", [1, 7])
def test_keys_with_percent_quote_and_backslash_neither_loop_nor_skip(db_url, bike_spec, scorer, days, chunk_rows):
    hostile = days.head(30).copy()
    for row, key in enumerate(["9pm%a", "5%$", "5%%&", "o'clock", "back\\slash", "%", "%s"]):
        hostile.loc[row, "hr"] = key
    url = seeded(db_url, bike_spec, hostile)
    summary = run_bounded(job(url, scorer, chunk_rows=chunk_rows))
    assert (summary.rows_read, summary.rows_rejected) == (30, 7)
    assert every_row_once(url, bike_spec, 30) == (23, 7)


# -- 2. one value is one row's reject, never the run's failure ---------------------------------------------------


def test_an_integer_beyond_64_bits_is_that_rows_reject_and_the_next_run_is_quiet(db_url, bike_spec, scorer, days):
    hostile = days.head(40).copy()
    hostile.loc[3, "hr"], hostile.loc[4, "hr"] = "1e19", "9.3e18"
    url = seeded(db_url, bike_spec, hostile)
    first = job(url, scorer).run()
    assert (first.status, first.rows_scored, first.rows_rejected) == (PARTIAL, 38, 2)
    rules = table(url, "prediction_rejects").set_index("value")["rule"]
    assert rules["1e19"] == rules["9.3e18"] == "type: integer (hour_of_day)"
    again = job(url, scorer).run()
    assert (again.status, again.exit_code, again.rows_read) == (SUCCESS, 0, 0)


def test_a_blob_in_a_sqlite_number_column_is_that_rows_reject(tmp_path, bike_spec, scorer, days):
    url = f"sqlite:///{tmp_path / 'blob.db'}"
    rows = days.head(2500 // 50).copy()
    engine = db.engine_for(url)
    db.seed(engine, bike_spec, rows.astype({"temp": "float64"}))
    with engine.begin() as connection:  # after the driver has typed the column as a number from earlier rows
        connection.execute(sa.text("UPDATE rentals SET temp = x'00ff10' WHERE dteday = :d AND hr = :h"),
                           {"d": rows.loc[45, "dteday"], "h": rows.loc[45, "hr"]})  # fmt: skip
    summary = job(url, scorer, chunk_rows=100).run()
    assert (summary.rows_scored, summary.rows_rejected) == (len(rows) - 1, 1)
    reject = table(url, "prediction_rejects").iloc[0]
    assert (reject["field"], reject["value"], reject["rule"]) == ("temp", "x'00FF10'", "type: number")


# -- 3. the end is inclusive; the newest row is scored ------------------------------------------------------------


def datetime_spec(spec: DatasetSpec) -> DatasetSpec:
    """The example with a date-time window column (`moment`, when the hour started)."""
    data = spec.model_dump(by_alias=True, exclude_none=True)
    data["columns"]["moment"] = {"type": "datetime", "nullable": True}
    data["source"]["window_column"] = "moment"
    return DatasetSpec.model_validate(data)


def test_on_a_datetime_window_the_latest_hour_is_scored_and_since_last_leaves_nothing(db_url, bike_spec, days):
    spec = datetime_spec(bike_spec)
    rows = days.assign(moment=pd.to_datetime(days["dteday"]) + pd.to_timedelta(range(len(days)), unit="h"))
    url = seeded(db_url, spec, rows)
    base = Scorer(scorer_pipeline(bike_spec, days), spec)
    first = BatchJob(db.engine_for(url), base, TAG).run(since_last=True)
    assert first.rows_read == len(rows)  # the newest hour too
    latest = rows["moment"].max()
    assert pd.Timestamp(first.window_end) == latest
    newer = rows.tail(1).assign(hr="11pm", dteday="2012-03-04", moment=latest + timedelta(hours=1))
    db.seed(db.engine_for(url), spec, newer)
    second = BatchJob(db.engine_for(url), base, TAG).run(since_last=True)
    assert second.rows_read == 1  # and nothing is left for the next run
    third = BatchJob(db.engine_for(url), base, TAG).run(since_last=True)
    assert third.rows_read == 0
    upto = BatchJob(db.engine_for(url), base, "other:1").run(end=str(latest))
    assert upto.rows_read == len(rows)  # a date-time end takes in that moment


def scorer_pipeline(spec: DatasetSpec, rows: pd.DataFrame):
    from tiffin.core.contract import Contract
    from tiffin.modeling.pipeline import build_pipeline

    train = Contract(spec).validate(rows).valid
    return build_pipeline(spec, {"max_iter": 10}).fit(train, train[spec.target])


def test_a_date_time_end_on_a_date_column_takes_in_that_whole_day(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days)
    summary = job(url, scorer).run(start=DAYS[0], end=f"{DAYS[0]}T00:00:00")
    assert summary.rows_read == (days["dteday"] == DAYS[0]).sum()


# -- 4. the watermark never lies ------------------------------------------------------------------------------------


def test_a_start_after_the_end_and_chunks_of_no_rows_are_refused(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days)
    with pytest.raises(WindowError, match="after its end"):
        job(url, scorer).run(start=DAYS[2], end=DAYS[0])
    with pytest.raises(ValueError, match="at least 1"):
        job(url, scorer, chunk_rows=0)
    assert table(url, "batch_watermarks").empty


def test_a_back_fill_never_moves_the_watermark_backwards(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days)
    job(url, scorer).run(start=DAYS[2], end=DAYS[2])
    job(url, scorer).run(start=DAYS[0], end=DAYS[0])  # a back-fill of an earlier day
    assert table(url, "batch_watermarks")["window_end"].tolist() == [DAYS[2]]
    resumed = job(url, scorer).run(since_last=True)
    assert resumed.window_start == DAYS[2] and resumed.rows_read == 0


def test_the_watermark_stops_at_the_latest_row_really_scored(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days[days["dteday"] == DAYS[0]])
    job(url, scorer).run(start=DAYS[0], end="2012-12-31")  # an end far beyond the data
    assert table(url, "batch_watermarks")["window_end"].tolist() == [DAYS[0]]
    db.seed(db.engine_for(url), bike_spec, days)  # later days arrive
    assert job(url, scorer).run(since_last=True).rows_read == (days["dteday"] != DAYS[0]).sum()


# -- 5. rejects come back only when their row changed; unreadable window values are rejected ----------------------


def test_a_changed_reject_is_taken_up_again_and_its_old_problem_goes(db_url, bike_spec, scorer, days):
    bad = days.copy()
    bad.loc[0, "hr"] = "25"
    url = seeded(db_url, bike_spec, bad)
    assert job(url, scorer).run().rows_rejected == 1
    quiet = job(url, scorer).run()
    assert (quiet.exit_code, quiet.rows_read, quiet.rows_skipped) == (0, 0, 1)
    engine = db.engine_for(url)
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE rentals SET temp = 20.5 WHERE hr = '25'"))  # still a bad hour
    again = job(url, scorer).run()
    assert (again.rows_read, again.rows_rejected) == (1, 1)
    assert table(url, "prediction_rejects")["value"].tolist() == ["25"]
    assert job(url, scorer, retry_rejects=True).run().rows_rejected == 1  # on request, unchanged ones too
    every_row_once(url, bike_spec, len(days))


def test_rows_whose_window_value_is_unreadable_are_rejected_by_a_run_over_all_rows(db_url, bike_spec, scorer, days):
    bad = days.copy()
    bad.loc[0, "dteday"] = "garbage"
    url = seeded(db_url, bike_spec, bad)
    summary = job(url, scorer).run()
    assert (summary.rows_read, summary.rows_rejected) == (len(days), 1)
    reject = table(url, "prediction_rejects").iloc[0]
    assert (reject["field"], reject["value"]) == ("dteday", "garbage")
    assert table(url, "batch_watermarks")["window_end"].tolist() == [DAYS[2]]  # the garbage is not "latest"


def test_an_unreadable_window_value_outside_the_contract_is_named_as_such(tmp_path, bike_spec, days):
    spec = datetime_spec(bike_spec)
    rows = days.assign(moment=[f"{d} 00:00:00" for d in days["dteday"]])
    rows.loc[2, "moment"] = "not a time"
    url = seeded(f"sqlite:///{tmp_path / 'w.db'}", spec, rows)
    summary = BatchJob(db.engine_for(url), Scorer(scorer_pipeline(bike_spec, days), spec), TAG).run()
    assert summary.rows_rejected == 1
    unreadable_moment = "type: datetime (YYYY-MM-DDTHH:MM[:SS[.fff]][Z|+HH:MM])"
    assert set(table(url, "prediction_rejects")["rule"]) <= {WINDOW_UNREADABLE, unreadable_moment}


# -- 6. faults keep their cause; counters equal what was committed; the dead are marked -------------------------


def test_a_failed_write_keeps_its_cause_and_the_counters_what_was_committed(db_url, bike_spec, scorer, days,
                                                                          monkeypatch):  # fmt: skip
    url = seeded(db_url, bike_spec, days)
    calls, original = 0, BulkConnection.write

    def third_write_fails(self, batches, then=(), *, before=(), **options):
        nonlocal calls
        calls += 1
        if calls == 3:  # the database refuses, and then the rollback fails too (as on a dead connection)
            self.connection.rollback = lambda: (_ for _ in ()).throw(RuntimeError("cannot rollback - no transaction"))
            then = [*then, sa.text("SELECT no_such_function()")]
        return original(self, batches, then, before=before, **options)

    monkeypatch.setattr(BulkConnection, "write", third_write_fails)
    with pytest.raises(Exception, match="no_such_function"):
        job(url, scorer, chunk_rows=20).run()
    runs = table(url, "batch_runs").iloc[0]
    assert runs["status"] == FAILED and "no_such_function" in runs["error"] and "rollback" not in runs["error"]
    assert runs["rows_scored"] == runs["rows_read"] == len(table(url, "predictions")) == 40


def test_a_run_left_running_by_a_dead_process_is_marked_abandoned(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days)
    first = job(url, scorer)
    engine = db.engine_for(url)
    with engine.begin() as connection:  # what a SIGKILLed run leaves: its row, still `running`
        connection.execute(first.tables.runs.insert().values(
            run_id="dead", source="rentals", model=TAG, started_at=pd.Timestamp("2026-01-01").to_pydatetime(),
            status="running", rows_read=0, rows_scored=0, rows_rejected=0))  # fmt: skip
    first.run()
    runs = table(url, "batch_runs").set_index("run_id")
    assert runs.loc["dead", "status"] == ABANDONED and "ended without finishing" in runs.loc["dead", "error"]


# -- 7. no accidental files, no tracebacks: see tests/model/test_batch_runner.py -------------------------------


def test_a_batch_never_creates_a_sqlite_file(tmp_path):
    missing = tmp_path / "typo" / "tiffin.db"
    with pytest.raises(db.DatabaseUnusable, match="no SQLite database"):
        db.engine_for(f"sqlite:///{missing}", must_exist=True)
    assert not missing.parent.exists()
    with pytest.raises(db.DatabaseUnusable, match="not a database URL"):
        db.engine_for("not a url", must_exist=True)
    with pytest.raises(db.DatabaseUnusable, match="no database driver 'garbage'"):
        db.engine_for("garbage://", must_exist=True)


# -- 8. the model's threads are pinned while it scores --------------------------------------------------------------


def test_the_model_scores_with_the_threads_it_was_given(db_url, bike_spec, scorer, days):
    url = seeded(db_url, bike_spec, days)
    seen = []

    class Watching(Scorer):
        def predict(self, columns):
            seen.extend(i["num_threads"] for i in threadpool_info() if i["user_api"] == "openmp")
            return super().predict(columns)

    watching = Watching(scorer.pipeline, bike_spec)
    BatchJob(db.engine_for(url), watching, TAG).run()
    assert seen and set(seen) == {1}
    BatchJob(db.engine_for(url), watching, "other:2", threads=2).run()
    assert set(seen[-1:]) == {2}
