"""Seeding and reading the source database, on SQLite and on PostgreSQL."""

from datetime import datetime
from pathlib import Path

import hypothesis.strategies as st
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import given, settings

from tiffin.cli.main import main
from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage import database as db
from tiffin.storage.bulk import APPLICATION_NAME, BulkConnection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sample(bike_raw: pd.DataFrame) -> pd.DataFrame:
    """Three days of raw rows, missing values included."""
    days = bike_raw[bike_raw["dteday"].isin(["2012-03-01", "2012-03-02", "2012-03-03"])]
    return days.reset_index(drop=True)


def read_all(url: str, spec: DatasetSpec, start: str = "2000-01-01", end: str = "2100-01-01") -> pd.DataFrame:
    return pd.concat(list(db.read_window(db.engine_for(url), spec, start, end)) or [pd.DataFrame()])


def test_seeding_twice_adds_nothing(db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame) -> None:
    engine = db.engine_for(db_url)
    first = db.seed(engine, bike_spec, sample)
    second = db.seed(engine, bike_spec, sample)
    assert (first.inserted, second.inserted) == (len(sample), 0)
    assert db.count_rows(engine, bike_spec) == len(sample)


def test_rows_are_stored_as_they_came(db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame) -> None:
    db.seed(db.engine_for(db_url), bike_spec, sample)
    stored = read_all(db_url, bike_spec).sort_values(["dteday", "hr"]).reset_index(drop=True)
    expected = sample.sort_values(["dteday", "hr"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(stored, expected, check_dtype=False)
    assert stored["hr"].str.endswith(("am", "pm")).all()  # text hours, not cleaned


def test_a_cut_off_loads_only_earlier_hours_and_the_rest_arrives_later(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    engine = db.engine_for(db_url)
    held_back = Contract(bike_spec).held_back(sample, datetime(2012, 3, 2, 6))
    result = db.seed(engine, bike_spec, sample, held_back=held_back)
    day_1 = (sample["dteday"] == "2012-03-01").sum()
    early_day_2 = (
        (sample["dteday"] == "2012-03-02") & sample["hr"].isin(["12am", *[f"{h}am" for h in range(1, 7)]])
    ).sum()
    assert result.inserted == day_1 + early_day_2
    assert result.held_back == len(sample) - result.inserted
    rest = db.seed(engine, bike_spec, sample)
    assert rest.inserted == len(sample) - result.inserted


def test_the_window_is_closed_and_a_date_end_includes_the_whole_day(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    db.seed(db.engine_for(db_url), bike_spec, sample)
    window = read_all(db_url, bike_spec, "2012-03-02", "2012-03-02")
    assert set(window["dteday"]) == {"2012-03-02"}
    assert len(window) == (sample["dteday"] == "2012-03-02").sum()


def test_reading_a_missing_table_says_how_to_fix_it(db_url: str, bike_spec: DatasetSpec) -> None:
    with pytest.raises(LookupError, match="tiffin db seed"):
        read_all(db_url, bike_spec)


def with_copies(sample: pd.DataFrame, copies: list[int], **changes: object) -> pd.DataFrame:
    """`sample` and, after it, a copy of each row in `copies` with `changes` (the same key, other values)."""
    later = sample.iloc[copies].assign(cnt=sample["cnt"].iloc[copies].to_numpy() + 1000, **changes)
    return pd.concat([sample, later], ignore_index=True)


def test_a_key_repeated_within_the_file_is_loaded_once_from_its_first_row_and_every_copy_is_a_reject(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    engine = db.engine_for(db_url)
    rows = with_copies(sample, [2, 5, 2])
    first = db.seed(engine, bike_spec, rows)
    assert (first.inserted, first.already_there, len(first.duplicates)) == (len(sample), 0, 3)
    expected = [
        (len(sample) + i, "dteday, hr", f"{sample.at[kept, 'dteday']}, {sample.at[kept, 'hr']}", "duplicate key", kept)
        for i, kept in enumerate([2, 5, 2])
    ]
    columns = ["row", "field", "value", "rule", "kept_row"]
    assert list(first.duplicates[columns].itertuples(index=False, name=None)) == expected
    assert first.duplicates["hr"].tolist() == sample["hr"].iloc[[2, 5, 2]].tolist()  # the raw key, to find it
    stored = read_all(db_url, bike_spec).set_index(["dteday", "hr"])["cnt"]
    assert stored.sort_index().equals(sample.set_index(["dteday", "hr"])["cnt"].sort_index())  # first copies
    again = db.seed(engine, bike_spec, rows)  # "already there" is an earlier seed's key, not a copy in the file
    assert (again.inserted, again.already_there) == (0, len(sample))
    pd.testing.assert_frame_equal(again.duplicates, first.duplicates)


def test_keys_are_compared_as_the_contract_reads_them(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    six = int(sample.index[sample["hr"] == "6am"][0])
    rows = with_copies(sample, [six], hr="6")  # '6am' and '6' are one hour
    canonical, _ = Contract(bike_spec).normalise(rows, bike_spec.key)
    result = db.seed(db.engine_for(db_url), bike_spec, rows, canonical_keys=canonical)
    assert result.inserted == len(sample)
    assert result.duplicates[["row", "hr", "kept_row"]].values.tolist() == [[len(sample), "6", six]]
    assert set(read_all(db_url, bike_spec)["hr"]) == set(sample["hr"])  # no '6' stored beside '6am'


def test_an_unreadable_key_is_compared_as_written_and_a_missing_one_is_no_duplicate(
    bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    rows = pd.concat([sample.head(1)] * 5, ignore_index=True)
    rows["hr"] = ["noon", "noon", None, None, "Noon"]
    canonical, _ = Contract(bike_spec).normalise(rows, bike_spec.key)
    duplicates = db.duplicate_keys(bike_spec, rows, canonical)
    assert duplicates[["row", "kept_row"]].values.tolist() == [[1, 0]]


def test_rows_are_numbered_as_the_contract_numbers_its_rejects(bike_spec: DatasetSpec, sample: pd.DataFrame) -> None:
    rows = with_copies(sample, [4])
    contract_reject = Contract(bike_spec).validate(rows).rejects
    assert db.duplicate_keys(bike_spec, rows)["row"].tolist() == contract_reject["row"].tolist()


def test_db_seed_reports_the_copies_writes_them_and_loads_the_rest(
    db_url: str, bike_spec: DatasetSpec, sample: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    six = int(sample.index[sample["hr"] == "6am"][0])
    seed_file = tmp_path / "rows.csv"
    pd.concat([with_copies(sample, [0, 1]), with_copies(sample, [six], hr="6").tail(1)], ignore_index=True).to_csv(
        seed_file, index=False
    )
    monkeypatch.chdir(tmp_path)
    args = ["db", "seed", "--spec", str(ROOT / "specs/bike_sharing.yaml"), "--db", db_url, "--file", str(seed_file)]
    done = CliRunner().invoke(main, args)
    assert done.exit_code == 0, done.output
    assert done.output.strip().splitlines()[-1] == (
        f"rentals: {len(sample)} rows added, 0 already there, 3 duplicate keys within the file "
        "(first copy kept; rejects in data/rejects/seed_rentals.csv)"
    )
    rejects = pd.read_csv(tmp_path / "data/rejects/seed_rentals.csv")
    assert list(rejects.columns) == ["row", "dteday", "hr", "field", "value", "rule", "kept_row"]
    n = len(sample)
    assert rejects[["row", "hr", "rule", "kept_row"]].values.tolist() == [
        [n, sample.at[0, "hr"], "duplicate key", 0],
        [n + 1, sample.at[1, "hr"], "duplicate key", 1],
        [n + 2, "6", "duplicate key", six],
    ]
    again = CliRunner().invoke(main, [*args, "--rejects", "elsewhere.csv"])
    assert f"0 rows added, {n} already there, 3 duplicate keys" in again.output
    assert (tmp_path / "elsewhere.csv").read_text() == (tmp_path / "data/rejects/seed_rentals.csv").read_text()


def test_db_seed_strict_loads_nothing_from_a_file_that_repeats_a_key(
    db_url: str, sample: pd.DataFrame, tmp_path: Path
) -> None:
    seed_file, rejects = tmp_path / "rows.csv", tmp_path / "rejects.csv"
    with_copies(sample, [3]).to_csv(seed_file, index=False)
    spec = str(ROOT / "specs/bike_sharing.yaml")
    args = ["db", "seed", "--spec", spec, "--db", db_url, "--file", str(seed_file), "--rejects", str(rejects)]
    done = CliRunner().invoke(main, [*args, "--strict"])
    assert done.exit_code == 1
    assert "nothing loaded (--strict): 1 duplicate keys within the file" in done.output
    assert pd.read_csv(rejects)["kept_row"].tolist() == [3]
    assert db.count_rows(db.engine_for(db_url), load_spec(spec)) == 0
    sample.to_csv(seed_file, index=False)  # without repeats, --strict loads as usual and writes no rejects
    rejects.unlink()
    done = CliRunner().invoke(main, [*args, "--strict"])
    assert done.exit_code == 0 and done.output.strip().endswith(f"rentals: {len(sample)} rows added, 0 already there")
    assert not rejects.exists()


def test_a_table_another_process_creates_meanwhile_is_no_error(db_url: str, bike_spec: DatasetSpec) -> None:
    """An API's two workers starting on a fresh database both check, then create, the prediction log and the
    feature table: the second CREATE fails (seen in the container, where a worker died of it). Here the other
    process creates the table between this one's check and its CREATE."""
    import sqlalchemy as sa

    from tiffin.storage import predlog

    engine, other = db.engine_for(db_url), sa.create_engine(db_url)
    table = predlog.log_table(bike_spec)

    def made_meanwhile(target: sa.Table, connection: sa.Connection, **_: object) -> None:
        target.to_metadata(sa.MetaData()).create(other)

    sa.event.listen(table, "before_create", made_meanwhile)
    db.create_tables(engine, table.metadata)
    assert sa.inspect(engine).has_table(table.name)
    engine.dispose()
    other.dispose()


def test_bulk_rows_expected_new_go_straight_in_and_a_key_already_there_is_skipped_as_ever(db_url: str) -> None:
    """Issue 18: predictions the batch expects to be new are copied straight into their table on PostgreSQL (no
    staging table); a key that is there after all makes the chunk go again the skipping way, nothing lost or
    doubled, the earlier row unchanged."""
    engine = db.engine_for(db_url)
    metadata = sa.MetaData()
    moment = sa.DateTime().with_variant(sa.Text(), "sqlite")
    table = sa.Table("bulk_keys", metadata, sa.Column("k", sa.Text(), primary_key=True),
                     sa.Column("model", sa.String(200), primary_key=True), sa.Column("x", sa.Float(precision=53)),
                     sa.Column("at", moment), sa.Column("role", sa.String(20)))  # fmt: skip
    metadata.create_all(engine)
    at = "2026-01-01T00:00:00.000000" if engine.dialect.name == "sqlite" else datetime(2026, 1, 1)
    bulk = BulkConnection(engine)
    first = pa.table({"k": ["a", "b"], "x": [1.0, 2.0]})
    bulk.write([(table, first, {"model": "m:1", "at": at, "role": None})], new_keys=[table])
    with bulk.connection.cursor() as cursor:  # the session's staging table exists only if the chunk was staged
        staged = {
            "postgresql": "SELECT to_regclass('pg_temp.staging_bulk_keys') IS NOT NULL",
            "sqlite": "SELECT count(*) > 0 FROM sqlite_temp_master WHERE name = 'staging_bulk_keys'",
        }
        cursor.execute(staged[engine.dialect.name])
        assert bool(cursor.fetchone()[0]) is (engine.dialect.name == "sqlite")
    again = pa.table({"k": ["b", "c"], "x": [20.0, 3.0]})
    bulk.write([(table, again, {"model": "m:1", "at": at, "role": "champion"})], new_keys=[table])
    bulk.close()
    with engine.connect() as connection:
        rows = connection.execute(sa.select(table.c.k, table.c.x, table.c.role).order_by(table.c.k)).all()
    assert [tuple(row) for row in rows] == [("a", 1.0, None), ("b", 2.0, None), ("c", 3.0, "champion")]
    engine.dispose()


def test_a_bulk_connection_kept_across_uses_holds_no_transaction_between_them_and_is_never_kept_on_sqlite(
    db_url: str,
) -> None:
    """Issue 18: a process materializing slice after slice keeps one bulk connection on PostgreSQL; between uses it
    is idle, not idle in a transaction holding locks (a DROP or ALTER of the tables it read would wait on it). On
    SQLite none is kept: ADBC's copy of SQLite must not have the file open while the engine's is."""
    engine = db.engine_for(db_url)
    kept = BulkConnection(engine)
    ours = "SELECT state FROM pg_stat_activity WHERE application_name = :app AND datname = current_database()"
    try:
        if not BulkConnection.may_stay_open(engine):
            refused = pytest.raises(ValueError, match="may not stay open on sqlite")
            with refused, BulkConnection.kept_or_new(engine, kept):
                pass
            return
        for _ in range(2):
            with BulkConnection.kept_or_new(engine, kept) as bulk:
                assert bulk is kept and bulk.read(sa.select(sa.literal(7).label("n")))["n"].tolist() == [7]
        with engine.connect() as connection:
            states = connection.execute(sa.text(ours), {"app": APPLICATION_NAME}).scalars().all()
        assert states == ["idle"]
    finally:
        kept.close()
        engine.dispose()


@settings(max_examples=25, deadline=None)
@given(moments=st.lists(st.none() | st.datetimes(min_value=datetime(1, 1, 1)), min_size=1, max_size=40))
def test_moments_the_bulk_path_writes_to_sqlite_are_the_text_its_driver_writes(tmp_path_factory, moments) -> None:
    """Issue 18: on SQLite the bulk path spells naive timestamps itself (Arrow: 0.05 s for 450,000 against the
    driver's 0.5 s); each must be the text ADBC's driver writes for it, byte for byte: nulls, before 1970, fractions
    of a second, a column in several chunks. A year past 9999, which the driver refuses, is still refused."""
    from adbc_driver_manager import ProgrammingError

    path = tmp_path_factory.mktemp("moments") / "m.db"
    engine = db.engine_for(f"sqlite:///{path}")
    metadata = sa.MetaData()
    table = sa.Table("moments", metadata, sa.Column("n", sa.Integer, primary_key=True), sa.Column("at", sa.Text()))
    metadata.create_all(engine)
    halves = [moments[: len(moments) // 2], moments[len(moments) // 2 :]]  # a column of two chunks, as chunks make
    at = pa.chunked_array([pa.array(half, pa.timestamp("us")) for half in halves], pa.timestamp("us"))
    rows = pa.table({"n": range(len(moments)), "at": at})
    far = pa.table({"n": [-1], "at": pa.array([np.datetime64("12026-01-01T00:00:00", "us")])})
    with BulkConnection(engine) as bulk:
        bulk.write([(table, rows, {})])
        with pytest.raises(ProgrammingError, match="Could not format timestamp"):
            bulk.write([(table, far, {})])
        with bulk.connection.cursor() as cursor:  # the driver's own spelling of the same moments
            cursor.adbc_ingest("by_driver", rows, mode="create")
            bulk.connection.commit()
    with engine.connect() as connection:
        ours = connection.execute(sa.text("SELECT n, at, typeof(at) FROM moments ORDER BY n")).all()
        theirs = connection.execute(sa.text("SELECT n, at, typeof(at) FROM by_driver ORDER BY n")).all()
    engine.dispose()
    assert ours == theirs


def test_a_sqlite_integer_column_with_a_real_past_the_drivers_first_batch_is_read_exactly(tmp_path: Path) -> None:
    """Issue 18, from the review of 0cd5f09: ADBC's SQLite driver types a column by its first batch of rows. A REAL
    after the first 1,024 integers makes it refuse the column, and the bulk path reads it again as exact text; read
    batches of 65,536 rows (tried for speed) typed it float instead, and 2**53 + 1 came back as 2**53."""
    engine = db.engine_for(f"sqlite:///{tmp_path / 'mixed.db'}")
    metadata = sa.MetaData()
    table = sa.Table("mixed", metadata, sa.Column("n", sa.Integer, primary_key=True), sa.Column("k", sa.Integer))
    metadata.create_all(engine)
    values = [*range(1500), 0.5, 2**53 + 1]
    with engine.begin() as connection:
        connection.execute(table.insert(), [{"n": n, "k": k} for n, k in enumerate(values)])
    with BulkConnection(engine) as bulk:
        found = bulk.read_exact(sa.select(table).order_by(table.c.n))
    engine.dispose()
    assert str(found["k"].iloc[-1]) == str(2**53 + 1) and float(found["k"].iloc[-2]) == 0.5


def _log_beside_reads(url: str, rows: pd.DataFrame, seconds: float) -> None:
    """One API worker's use of a SQLite file: a thread appending to the prediction log while another reads through
    the engine (the history lookup)."""
    import threading
    import time

    from tiffin.storage import predlog

    spec = load_spec(ROOT / "specs/bike_sharing_rows.yaml")  # the `bike_spec` fixture's
    engine = db.engine_for(url, must_exist=True)
    table = predlog.ensure_table(engine, spec)
    stop = time.monotonic() + seconds

    def read() -> None:
        while time.monotonic() < stop:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        while time.monotonic() < stop:
            predlog.write(engine, spec, rows, table)
    finally:
        reader.join()


def test_two_workers_logging_beside_their_history_reads_never_break_a_sqlite_file(
    tmp_path: Path, bike_spec: DatasetSpec, sample: pd.DataFrame
) -> None:
    """Observed in `make bench`: the API's two workers, each writing its log through ADBC while reading its history
    through the engine, left "database disk image is malformed" (and "disk I/O error" at COMMIT): a copy of SQLite
    that closes its descriptor drops the locks of the other copy in the same process."""
    import multiprocessing

    from tiffin.storage import predlog

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    canonical = Contract(bike_spec).validate(sample).valid
    rows = pd.concat([predlog.entries(bike_spec, canonical, [1.0] * len(canonical), model="m:1", role="champion",
                                      source="api")] * 20, ignore_index=True)  # fmt: skip
    predlog.ensure_table(db.engine_for(url), bike_spec)
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_beside_reads, args=(url, rows, 8.0)) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0]  # no "disk I/O error", no "database is locked"
    with db.engine_for(url).connect() as connection:
        assert connection.execute(sa.text("PRAGMA integrity_check")).scalar() == "ok"
        assert connection.execute(sa.text("SELECT count(*) FROM prediction_log")).scalar() % len(rows) == 0
