"""A history model in the batch runner (issue 15): it materializes the feature table, reads its features from it,
and scores and logs exactly what training computes for the same rows; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
import time

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from tiffin.core.contract import Contract
from tiffin.core.spec import load_spec
from tiffin.features import logged as prediction_log
from tiffin.features import store
from tiffin.features.history import history_features
from tiffin.jobs import batch
from tiffin.jobs.batch import SUCCESS, BatchJob, score_rows
from tiffin.modeling.pipeline import build_pipeline
from tiffin.serving.scorer import Scorer
from tiffin.storage import database as db
from tiffin.storage import predlog
from tiffin.storage.bulk import APPLICATION_NAME, BulkConnection
from tiffin.storage.database import Window

from ..conftest import ROOT

TAG = "bike_demand:batch-test"


@pytest.fixture(scope="module")
def history_spec():
    return load_spec(ROOT / "specs/bike_sharing.yaml")


@pytest.fixture(scope="module")
def offline(history_spec, bike_raw: pd.DataFrame) -> pd.DataFrame:
    """January and February 2011 as training sees them: canonical rows with their history features."""
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")].reset_index(drop=True)
    result = Contract(history_spec).validate(raw)
    known = pd.concat([result.valid, result.unlabeled], ignore_index=True)
    return result.valid.join(history_features(history_spec, known, result.valid))


def test_the_batch_reads_and_logs_the_features_training_computes(db_url, history_spec, offline, bike_raw) -> None:
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 30}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])

    summary = BatchJob(engine, Scorer(pipeline, history_spec), TAG).run("2011-02-01", "2011-02-28")
    assert summary.status == SUCCESS and len(store.read(engine, history_spec, "2011-02-01", "2011-02-28")) > 600

    february = offline[offline["dteday"] >= "2011-02-01"]
    february = february.iloc[history_spec.event_time(february).argsort(kind="stable")].reset_index(drop=True)
    logged = prediction_log.read(engine, history_spec, "2011-02-01", "2011-02-28")
    logged = logged.assign(at=logged["event_time"]).sort_values("at").reset_index(drop=True)
    assert len(logged) == len(february) == summary.rows_scored
    names = history_spec.history.names()
    expected = february[names].to_numpy(dtype="float64")
    assert np.array_equal(logged[names].to_numpy(dtype="float64"), expected, equal_nan=True)  # exact equality
    assert np.array_equal(logged["prediction"].to_numpy(), pipeline.predict(february))
    engine.dispose()


def _scored(engine, tag: str) -> pd.DataFrame:
    query = f"SELECT dteday, hr, prediction FROM {predlog.BATCH_TABLE} WHERE model = '{tag}'"
    found = pd.read_sql(query, engine).astype({"dteday": str, "hr": str})
    return found.sort_values(["dteday", "hr"]).reset_index(drop=True)


def _materialized(caplog: pytest.LogCaptureFixture) -> list[int]:
    """The points each slice of a run materialized (from the runner's log)."""
    return [record.args[1] for record in caplog.records if record.name == "tiffin.batch" and "points" in record.msg]


@pytest.mark.parametrize(("slice_rows", "processes"), [(50, 1), (333, 2)])
def test_a_window_scored_in_time_slices_scores_what_the_whole_window_does(
    db_url, history_spec, offline, bike_raw, caplog, slice_rows, processes
) -> None:
    """Issue 18: a history model's run materializes and holds one time slice's features at a time; every row of
    the window is read once and scored as in one piece (identical predictions), with fewer points held; by one
    process or by two (each slice's features sent with each chunk)."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    whole = BatchJob(engine, Scorer(pipeline, history_spec), "whole:1", slice_rows=10**6).run("2011-01-10")
    caplog.set_level("INFO", logger="tiffin.batch")
    sliced = BatchJob(engine, Scorer(pipeline, history_spec), "sliced:1", slice_rows=slice_rows,
                      processes=processes).run("2011-01-10")  # fmt: skip

    points = _materialized(caplog)
    assert len(points) > 1 and max(points) < whole.rows_read / 2
    assert sliced.status == whole.status == SUCCESS and sliced.rows_read == whole.rows_read > 1000
    expected, found = _scored(engine, "whole:1"), _scored(engine, "sliced:1")
    assert found[["dteday", "hr"]].equals(expected[["dteday", "hr"]]) and not found.duplicated(["dteday", "hr"]).any()
    assert np.array_equal(found["prediction"], expected["prediction"])  # exact: the same features, the same model
    engine.dispose()


def _timed(record, what, work):
    """`work`, recording in the file `record` which process ran it, when (the machine's monotonic clock, the same in
    every process), and `what` of its arguments."""

    def timed(*args, **kwargs):
        began = time.monotonic()
        try:
            return work(*args, **kwargs)
        finally:
            line = json.dumps({"pid": os.getpid(), "began": began, "ended": time.monotonic(), **what(*args, **kwargs)})
            with record.open("a") as out:  # one short line a write: appends do not interleave
                out.write(line + "\n")

    return timed


def _opened_in_batch(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The process of each bulk connection the batch module opens from now on, in order."""
    opened = []

    class Opened(BulkConnection):
        def __init__(self, *args, **kwargs) -> None:
            opened.append(os.getpid())
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(batch, "BulkConnection", Opened)
    return opened


def test_the_next_slice_is_materialized_in_a_scoring_process_while_this_one_is_scored(
    db_url, history_spec, offline, bike_raw, tmp_path, monkeypatch
) -> None:
    """Issue 18: with scoring processes, each slice's features are materialized in one of them, and the next
    slice's while this one's chunks are scored (before: in the batch process, between slices, the other core
    idle: a third of a history run); the slice is scored where it was materialized, and the batch process only
    writes, through one connection for the run."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    record = tmp_path / "record.jsonl"
    bounds = lambda _e, _s, start, end, **_: {"start": start, "end": end}  # noqa: E731
    monkeypatch.setattr(store, "materialize", _timed(record, bounds, store.materialize))
    monkeypatch.setattr(batch, "score_rows", _timed(record, lambda _s, chunk, _h: {"last": chunk["dteday"].max()},
                                                   batch.score_rows))  # fmt: skip
    opened = _opened_in_batch(monkeypatch)

    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=40, slice_rows=100, processes=2)
    summary = job.run("2011-01-10")
    assert summary.status == SUCCESS and summary.rows_scored > 1000

    events = pd.read_json(record, lines=True, dtype=False, convert_dates=False)
    events = events.sort_values("began")
    materialized, scored = events[events["start"].notna()], events[events["last"].notna()]
    assert len(materialized) > 5 and not (materialized["pid"] == os.getpid()).any()
    # A slice's materializing overlaps the scoring of a chunk of an earlier slice (its rows end before the slice's
    # margin day): every slice after the first could, one at least must.
    overlapping = [
        (scored["last"] <= slice.start) & (scored["ended"] > slice.began) & (scored["pid"] != slice.pid)
        for slice in materialized.iloc[1:].itertuples()
    ]
    assert sum(overlap.any() for overlap in overlapping) >= 1
    # Each slice is scored in the process that materialized it (before: its rows and features crossed to the batch
    # process, its chunks back); the batch process reads nothing and writes through one connection for the run.
    for chunk in scored.itertuples():  # a slice holds the days after its margin day, up to its end (exclusive)
        owner = (materialized["start"] < chunk.last) & (materialized["end"].isna() | (chunk.last < materialized["end"]))
        assert materialized.loc[owner, "pid"].tolist() == [chunk.pid]
    assert opened == [os.getpid()]
    engine.dispose()


def test_slices_scored_in_scoring_processes_write_what_one_process_writes(db_url, history_spec, offline, bike_raw):
    """Issue 18: a history model's slices, each scored whole in the scoring process that materialized it, write the
    predictions, the challenger's, the rejects and the counters one process writes; a rejected row fixed since is
    taken up again (its old problem deleted by the batch process, from the keys the scoring process sent), a row
    still broken is skipped."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    challenger = build_pipeline(history_spec, {"max_iter": 3}).fit(january, january[history_spec.target])
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")].astype(object).reset_index(drop=True)
    raw.loc[100, "hr"], raw.loc[700, "temp"] = 77, "warm"
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, raw)
    runs = {}
    for name, processes in (("one", 1), ("two", 2)):
        job = BatchJob(engine, Scorer(pipeline, history_spec), f"{name}:1", chunk_rows=40, slice_rows=100,
                       processes=processes, shadow=(f"{name}-shadow:1", Scorer(challenger, history_spec)))  # fmt: skip
        runs[name] = job.run()
    assert (runs["one"].rows_read, runs["one"].rows_rejected) == (len(raw), 2)
    _assert_same_outputs(engine, runs)
    fixed = raw.loc[700, ["dteday", "hr"]]
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE rentals SET temp = '0.3' WHERE dteday = :d AND hr = :h"),
                           {"d": fixed["dteday"], "h": str(fixed["hr"])})  # fmt: skip
    for name, processes in (("one", 1), ("two", 2)):
        job = BatchJob(engine, Scorer(pipeline, history_spec), f"{name}:1", chunk_rows=40, slice_rows=100,
                       processes=processes)  # fmt: skip
        runs[name] = job.run()
        assert (runs[name].status, runs[name].rows_read, runs[name].rows_skipped) == (SUCCESS, 1, 1)
    _assert_same_outputs(engine, runs)
    with engine.connect() as connection:
        rules = connection.execute(sa.text("SELECT rule FROM prediction_rejects WHERE model = 'two:1'")).scalars()
        assert list(rules) == ["in_range(0, 23)"]
    engine.dispose()


def _assert_same_outputs(engine, runs: dict) -> None:
    one, two = runs["one"], runs["two"]
    assert (one.status, one.rows_read, one.rows_scored, one.rows_rejected, one.rows_skipped, one.window_end) == (
        two.status, two.rows_read, two.rows_scored, two.rows_rejected, two.rows_skipped, two.window_end)  # fmt: skip
    with engine.connect() as connection:
        for table, columns in (("predictions", "dteday, hr, event_time, prediction, role"),
                               ("prediction_rejects", "dteday, hr, field, value, rule, row_hash")):  # fmt: skip
            found = {}
            for name in ("one", "two"):
                query = f"SELECT model, {columns} FROM {table} WHERE model LIKE :m ORDER BY model, {columns}"
                rows = pd.DataFrame(connection.execute(sa.text(query), {"m": f"{name}%"}).mappings().all())
                found[name] = rows.assign(model=rows["model"].str.replace(name, "", n=1)) if len(rows) else rows
            pd.testing.assert_frame_equal(found["one"], found["two"])


@pytest.mark.parametrize("processes", [1, 2])
def test_a_process_reads_the_slices_it_materializes_through_one_connection(
    db_url, history_spec, offline, bike_raw, tmp_path, monkeypatch, processes
) -> None:
    """Issue 18: on PostgreSQL, the process materializing a run's slices reads them through one bulk connection,
    opened at its first slice and closed at the end (before: two opened a slice, ~30 ms each: a tenth of a run).
    On SQLite each slice still opens its own: ADBC's copy of SQLite must not have the file open while the engine
    writes the features."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    record = tmp_path / "record.jsonl"
    reader = lambda _e, _s, start, _end, reader=None, **_: {"start": start, "reader": reader and id(reader)}  # noqa: E731
    monkeypatch.setattr(store, "materialize", _timed(record, reader, store.materialize))
    opened = []

    class Opened(BulkConnection):  # a connection store opens for one read
        def __init__(self, *args, **kwargs) -> None:
            with record.open("a") as out:
                out.write(json.dumps({"pid": os.getpid(), "opened": True}) + "\n")
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(store, "BulkConnection", Opened)
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=40, slice_rows=100, processes=processes)
    assert job.run("2011-01-10").status == SUCCESS

    events = pd.read_json(record, lines=True, dtype=False, convert_dates=False)
    slices = events[events["start"].notna()]
    assert len(slices) > 5 and (processes == 1) == (slices["pid"] == os.getpid()).all()
    opened = events[events["opened"].notna()] if "opened" in events else events.iloc[:0]
    if engine.dialect.name == "sqlite":
        # one a slice: the window, its days' digests and the stored features read through it
        assert slices["reader"].isna().all() and len(opened) == len(slices)
    else:
        readers = slices.groupby("pid")["reader"].agg(["nunique", "count"])
        assert (readers["nunique"] == 1).all() and (readers["count"] > 0).all() and opened.empty
        with engine.connect() as connection:  # the batch process's reader was closed with its run
            ours = "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND application_name = :a"
            assert connection.execute(sa.text(ours), {"a": APPLICATION_NAME}).scalar() == 0
    engine.dispose()


def test_without_scoring_processes_one_pipeline_runs_across_slices_where_the_database_allows(
    db_url, history_spec, offline, bike_raw, monkeypatch
) -> None:
    """Issue 18: with `--processes 1` on PostgreSQL, one pipeline runs from the first slice to the last, each slice
    materialized on its reading thread (before: a pipeline a slice, drained at each slice's end, its reader and
    writer opened again: 36 k -> 52 k rows/s on 1 M rows). On SQLite a pipeline a slice, materialized between
    them: ADBC's copy of SQLite must not have the file open while the engine writes the features."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    opened = _opened_in_batch(monkeypatch)
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=40, slice_rows=100, processes=1)
    parts, _ = job.slices(Window.parse("2011-01-10", None), "2011-01-10", None)
    summary = job.run("2011-01-10")
    assert summary.status == SUCCESS and len(parts) > 5
    assert _scored(engine, TAG)["dteday"].min() == "2011-01-10" and len(_scored(engine, TAG)) == summary.rows_scored
    if engine.dialect.name == "sqlite":
        assert len(opened) == 2 * len(parts)  # a reader and a writer a slice
    else:
        assert len(opened) == 3  # the run's reader and writer, and the reader materializing reads through
    engine.dispose()


def test_a_short_read_is_the_last(db_url, history_spec, offline, bike_raw) -> None:
    """Issue 18: a chunk read that comes back short is its slice's last (before: one more, empty, read a slice,
    which on SQLite walked the slice again: its rows are found by the window column's index, then sorted)."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=50, slice_rows=100)
    window = Window.parse("2011-01-10", None)
    parts, total = job.slices(window, "2011-01-10", None)
    rows = _rows_per_slice(job, window, parts)
    assert len(parts) > 5 and any(count % 50 for count in rows)
    handed, reads = [], []
    for part in parts:
        with BulkConnection(engine) as bulk:
            reads.append(0)
            bulk.read_exact = _counted(bulk.read_exact, reads)
            handed += [len(chunk) for chunk in job.chunks(bulk, window, part)]
    assert sum(handed) == total and max(handed) == 50
    assert reads == [count // 50 + 1 for count in rows]  # chunk by chunk, until a short one (empty: a multiple)
    engine.dispose()


def test_a_planned_slice_is_read_once_by_the_read_that_materializes_it(
    db_url, history_spec, offline, bike_raw, monkeypatch
) -> None:
    """Issue 18: a slice planned at whole days is read from the source once: the read that materializes its
    features hands over its unscored rows too (a column of it says which), cut into chunks (before: the slice's
    rows were read a second time, on SQLite 55 ms for 22,500 rows where the column costs 9); every unscored row of
    the window is scored once, a row with no window value in a slice of its own."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")]
    db.seed(engine, history_spec, raw)
    monkeypatch.setattr(batch, "SLICE_ROWS", 300)  # three chunks of 100 (at 1 M rows: 25,000, one chunk)
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=100, processes=1)
    window = Window.parse(None, None)
    parts, total = job.slices(window, None, None)
    assert len(parts) > 3 and all(part.planned for part in parts) and total == len(raw)
    source, reads, sizes = history_spec.source.table, [], []
    read_exact = BulkConnection.read_exact

    def counted(bulk: BulkConnection, query: sa.Select, *args, **kwargs) -> pd.DataFrame:
        reads.append(any(getattr(found, "name", None) == source for found in query.get_final_froms()))
        return read_exact(bulk, query, *args, **kwargs)

    def sized(scoring: batch.Scoring, chunk: pd.DataFrame, history: pd.DataFrame | None = None) -> batch.RowsScored:
        sizes.append(len(chunk))
        return score_rows(scoring, chunk, history)

    monkeypatch.setattr(BulkConnection, "read_exact", counted)
    monkeypatch.setattr(batch, "score_rows", sized)
    summary = job.run()
    assert summary.rows_read == total and summary.rows_scored == total
    assert sum(reads) == len(parts) and max(sizes) <= 100 and sum(sizes) == total
    scored = _scored(engine, TAG)
    assert len(scored) == total and not scored[history_spec.key].astype(str).duplicated().any()
    engine.dispose()


def test_a_window_none_of_whose_rows_were_scored_is_read_without_asking_the_predictions_of_each_row(
    db_url, history_spec, offline, bike_raw, monkeypatch
) -> None:
    """Issue 18: a run that begins with no row of its window scored by its model picks each slice's rows without
    asking the predictions table about each (on PostgreSQL that question is a subplan, an index probe a row: half
    the read's work). Where some rows are scored, the reads ask, and only the rest are scored, once."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 5}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")]
    db.seed(engine, history_spec, raw)
    monkeypatch.setattr(batch, "SLICE_ROWS", 300)
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, chunk_rows=100, processes=1)
    source, predictions, asked = history_spec.source.table, job.tables.predictions.name, []
    read_exact = BulkConnection.read_exact

    def noted(bulk: BulkConnection, query: sa.Select, *args, **kwargs) -> pd.DataFrame:
        if any(getattr(found, "name", None) == source for found in query.get_final_froms()):
            asked.append(f"FROM {predictions}" in str(query).replace('"', ""))
        return read_exact(bulk, query, *args, **kwargs)

    monkeypatch.setattr(BulkConnection, "read_exact", noted)
    first = job.run(None, "2011-01-20")
    assert first.rows_scored == first.rows_read > 0 and len(asked) > 1 and not any(asked)
    asked.clear()
    rest = job.run()
    assert rest.rows_read == len(raw) - first.rows_read and rest.rows_scored == rest.rows_read
    assert asked and all(asked)
    scored = _scored(engine, TAG)
    assert len(scored) == len(raw) and not scored[history_spec.key].astype(str).duplicated().any()
    engine.dispose()


def _counted(read, reads: list[int]):
    def counted(*args, **kwargs):
        reads[-1] += 1
        return read(*args, **kwargs)

    return counted


def _rows_per_slice(job: BatchJob, window: Window, parts: list) -> list[int]:
    with job.engine.connect() as connection:
        return [
            connection.execute(
                sa.select(sa.func.count()).select_from(job._selection(window, part).subquery())
            ).scalar_one()
            for part in parts
        ]


def test_a_history_run_computes_only_what_it_scores(db_url, history_spec, offline, bike_raw, caplog) -> None:
    """Issue 18: a re-run with nothing new materializes nothing (before: the whole window, 25-29 s at 1 M rows);
    a run after a new day materializes that day and the one before, not the table."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")]
    db.seed(engine, history_spec, raw[raw["dteday"] < "2011-02-28"])
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG)
    assert job.run().rows_scored > 1300
    with engine.begin() as connection:
        connection.exec_driver_sql(f"DELETE FROM {store.table_name(history_spec)}")

    caplog.set_level("INFO", logger="tiffin.batch")
    again = job.run()
    assert again.rows_read == 0 and _materialized(caplog) == []
    assert store.read(engine, history_spec).empty

    db.seed(engine, history_spec, raw[raw["dteday"] == "2011-02-28"])
    latest = job.run()
    assert latest.rows_scored == (raw["dteday"] == "2011-02-28").sum()
    assert _materialized(caplog) == [len(raw[raw["dteday"].between("2011-02-27", "2011-02-28")])]
    engine.dispose()


@pytest.mark.parametrize("processes", [1, 2])
@pytest.mark.parametrize("day", [None, "someday", " 2011-01-15"])
def test_a_row_with_no_window_time_is_read_once_and_rejected_by_a_sliced_run(
    tmp_path, history_spec, offline, bike_raw, day, processes
) -> None:
    """Slices cut the window by time; a row whose window value is null or no time (SQLite keeps either) still
    lies in exactly one of them (null: a slice of its own, read apart; no time: the run is one slice) and is
    rejected, as in a run of one piece, whichever process scores it."""
    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(f"sqlite:///{tmp_path / 'source.db'}")
    raw = bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-01-31")].reset_index(drop=True)
    # A table made elsewhere, without the NOT NULL that `db.seed` puts on key columns.
    raw.assign(dteday=raw["dteday"].mask(raw.index == 300, day)).to_sql("rentals", engine, index=False)
    job = BatchJob(engine, Scorer(pipeline, history_spec), TAG, slice_rows=100, processes=processes)
    parts, _ = job.slices(Window(), None, None)
    if day is None:  # the rows with a date in planned slices, the one without in a slice of its own, last
        assert len(parts) > 2 and parts[-1].undated and all(part.planned for part in parts[:-1])
    else:  # "someday" sorts after every date, " 2011-01-15" below its own day: slicing by time cannot place them
        assert len(parts) == 1 and not parts[0].planned
    summary = job.run()
    assert summary.rows_read == len(raw) and summary.rows_rejected == 1
    assert summary.rows_scored == len(raw) - 1
    engine.dispose()


def test_stale_history_is_null_and_counted_or_refused_as_the_spec_says(db_url, history_spec, offline, bike_raw):
    """The online lookup (issue 15): a time with nothing known in the 48 h before it is stale."""
    from tiffin.features.online import OnlineHistory

    january = offline[offline["dteday"] < "2011-02-01"]
    pipeline = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-01-31")])
    store.materialize(engine, history_spec)
    history = OnlineHistory(engine, history_spec, keep=pd.Timedelta(days=35))
    history.refresh(force=True)
    weather = {"weathersit": "Clear", "temp": 5.0, "atemp": 3.0, "hum": 50.0, "windspeed": 10.0}
    fresh = {"dteday": "2011-01-31", "hr": 20, "season": "spring", "holiday": "No", "weekday": "Mon",
             "workingday": "Yes", **weather}  # fmt: skip
    stale = {**fresh, "dteday": "2011-03-15", "weekday": "Tue"}

    scored = Scorer(pipeline, history_spec, history).score([fresh, stale])
    assert scored.stale == 1 and len(scored.predictions) == 2
    assert not np.isnan(scored.columns["cnt_lag_1h"][0]) and np.isnan(scored.columns["cnt_lag_1h"][1])

    strict = history_spec.model_copy(
        update={"history": history_spec.history.model_copy(update={"when_stale": "refuse"})}
    )
    refused = Scorer(pipeline, strict, history).score([fresh, stale])
    assert refused.predictions == [] and [(p["row"], p["field"]) for p in refused.problems] == [(1, "dteday")]
    assert "history stale" in refused.problems[0]["rule"] and "48h" in refused.problems[0]["rule"]
    engine.dispose()


def test_the_online_table_answers_what_computing_from_the_grid_does(db_url, history_spec, offline, bike_raw) -> None:
    """Each worker precomputes every hour from the grid's start to the last that can be fresh; hours before and
    after are computed from the grid. Either way: training's values, and the same staleness."""
    from tiffin.core.contract import RecordValidator
    from tiffin.features.online import OnlineHistory

    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-01-31")])
    history = OnlineHistory(engine, history_spec, keep=pd.Timedelta(days=7))
    history.refresh(force=True)
    weather = {"weathersit": "Clear", "temp": 5.0, "atemp": 3.0, "hum": 50.0, "windspeed": 10.0}
    hours = pd.date_range("2011-01-10", "2011-02-06 23:00", freq="h")  # before the grid, in it, and past fresh
    records = [{"dteday": f"{t:%Y-%m-%d}", "hr": t.hour, "season": "spring", "holiday": "No",
                "weekday": f"{t:%a}", "workingday": "Yes", **weather} for t in hours]  # fmt: skip
    columns, problems = RecordValidator(history_spec).validate(records)
    assert problems == []
    names = history_spec.history_columns

    def rows(at: np.ndarray | slice) -> dict:
        return {name: np.asarray(values)[at] for name, values in columns.items()}

    computed = history.computed(columns)
    covered = np.array([history.in_table(rows(slice(i, i + 1))) for i in range(len(hours))])
    assert covered.any() and not covered.all()  # both paths are exercised

    for i in range(len(hours)):
        one = history.lookup(rows(slice(i, i + 1)))
        assert one.stale[0] == computed.stale[i]
        for name in names:
            assert np.array_equal(one.features[name], computed.features[name][i : i + 1], equal_nan=True)
    in_table = np.flatnonzero(covered)
    together = history.lookup(rows(in_table))
    for name in names:
        assert np.array_equal(together.features[name], computed.features[name][in_table], equal_nan=True)

    # The hours the worker keeps (7 days before the latest day; the grid reaches a lookback further) up to the
    # first hour past the seeded rows, that the data has: the values training computes.
    by_time = offline.set_index(history_spec.event_time(offline))
    kept = (hours >= "2011-01-24") & (hours <= "2011-02-01 00:00") & hours.isin(by_time.index)
    fresh = in_table[kept[in_table]]
    expected = by_time.loc[hours[fresh], names]
    assert len(fresh) > 150
    found = np.column_stack([computed.features[name][fresh] for name in names])
    assert np.array_equal(found, expected.to_numpy(dtype="float64"), equal_nan=True)
    # The last fresh hour is 1 h + 48 h after the last known one; later ones are stale.
    last_fresh = hours[in_table[~computed.stale[in_table]]].max()
    assert last_fresh == pd.Timestamp("2011-01-31 23:00") + pd.Timedelta(hours=49)
    # The arrays of an answer are the caller's: nulling them (the scorer does, for stale rows) leaves the table.
    latest = slice(fresh[-1], fresh[-1] + 1)
    for values in history.lookup(rows(latest)).features.values():
        values[:] = np.nan
    again = history.lookup(rows(latest))
    assert all(np.array_equal(again.features[n], computed.features[n][latest], equal_nan=True) for n in names)
    assert not all(np.isnan(again.features[n][0]) for n in names)
    engine.dispose()


def test_a_history_challenger_in_shadow_behind_a_row_only_champion(db_url, history_spec, bike_spec, offline, bike_raw):
    """The API's shadow looks its own history features up; the batch, which reads only the champion's, refuses."""
    from tiffin.features.online import OnlineHistory
    from tiffin.serving.openapi import request_json
    from tiffin.storage.predlog import AsyncLogger

    january = offline[offline["dteday"] < "2011-02-01"]
    row_only = build_pipeline(bike_spec, {"max_iter": 20}).fit(january, january[bike_spec.target])
    with_history = build_pipeline(history_spec, {"max_iter": 20}).fit(january, january[history_spec.target])
    engine = db.engine_for(db_url)
    db.seed(engine, history_spec, bike_raw[bike_raw["dteday"].between("2011-01-01", "2011-02-28")])
    challenger = ("bike_demand:with-history", Scorer(with_history, history_spec))
    with pytest.raises(ValueError, match="reads history features the champion bike_demand:row-only does not"):
        BatchJob(engine, Scorer(row_only, bike_spec), "bike_demand:row-only", shadow=challenger)

    history = OnlineHistory(engine, history_spec, keep=pd.Timedelta(days=35))
    history.refresh(force=True)
    week = offline[offline["dteday"].between("2011-02-20", "2011-02-26")].reset_index(drop=True)
    scored = Scorer(row_only, bike_spec).score(json.loads(request_json(week[bike_spec.input_columns], bike_spec)))
    shadow = (challenger[0], Scorer(with_history, history_spec, history).predict_logged)
    logger = AsyncLogger(engine, bike_spec, "bike_demand:row-only", sample=1.0, shadow=shadow)
    logger.submit(scored.columns, scored.predictions)
    logger.close()
    logged = prediction_log.read(engine, bike_spec, "2011-02-20", "2011-02-26")
    by_role = {role: rows.sort_values("event_time")["prediction"].to_numpy() for role, rows in logged.groupby("role")}
    week = week.iloc[history_spec.event_time(week).argsort(kind="stable")]
    assert np.array_equal(by_role["champion"], row_only.predict(week))
    assert np.allclose(by_role["challenger"], with_history.predict(week), rtol=1e-12)  # its own features
    engine.dispose()


def test_the_api_log_keeps_one_connection_on_postgresql_reopens_after_a_failure_and_never_uses_adbc_on_sqlite(
    db_url, bike_spec, offline, monkeypatch
):
    """Each write costs the answering loop GIL hand-offs (issue 15), the connection's opening among them: on
    PostgreSQL one ADBC connection for the thread's life, a new one only after a failed write, and no request lost
    but the failed. On SQLite no ADBC at all: its second copy of SQLite beside the engine's corrupted the file."""
    from tiffin.serving.openapi import request_json
    from tiffin.storage.predlog import AsyncLogger

    opened = []

    class Counted(predlog.BulkConnection):
        def __init__(self, engine) -> None:
            super().__init__(engine)
            opened.append(self)

    monkeypatch.setattr(predlog, "BulkConnection", Counted)
    january = offline[offline["dteday"] < "2011-02-01"]
    model = build_pipeline(bike_spec, {"max_iter": 20}).fit(january, january[bike_spec.target])
    engine = db.engine_for(db_url)
    scorer = Scorer(model, bike_spec)
    days = [offline[offline["dteday"] == day] for day in ("2011-02-01", "2011-02-02", "2011-02-03")]
    logger = AsyncLogger(engine, bike_spec, TAG, sample=1.0, flush_seconds=0.05)

    def log_and_wait(rows: pd.DataFrame) -> None:
        scored = scorer.score(json.loads(request_json(rows[bike_spec.input_columns], bike_spec)))
        logger.submit(scored.columns, scored.predictions)
        while not logger.queue.empty():
            time.sleep(0.01)
        time.sleep(0.3)  # the write that follows the take

    log_and_wait(days[0])
    log_and_wait(days[1])
    on_sqlite = engine.dialect.name == "sqlite"
    assert len(opened) == (0 if on_sqlite else 1)
    if not on_sqlite:
        opened[0].connection.close()  # the database dropped it: that write fails, the next one reconnects
        log_and_wait(days[1])
    log_and_wait(days[2])
    logger.close()
    assert len(opened) == (0 if on_sqlite else 2)
    logged = prediction_log.read(engine, bike_spec, "2011-02-01", "2011-02-03")
    assert logged.groupby(logged["event_time"].dt.day).size().to_dict() == {1: len(days[0]), 2: len(days[1]),
                                                                            3: len(days[2])}  # fmt: skip
    engine.dispose()
