"""The feature table's change tracking (issue 18): a window none of whose days changed since its features were
computed is read back, not computed again; any change a point's features read makes it computed, whatever
happened in between (a value changed and changed back, a row removed and put back)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tiffin.core.contract import Contract
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.features import inputs, store
from tiffin.features.history import history_features
from tiffin.storage import database

from ..conftest import ROOT

DAYS = pd.date_range("2011-01-01", "2011-01-31").strftime("%Y-%m-%d").tolist()
ROWS = 688  # January 2011's rows in the example's data


@pytest.fixture(scope="module")
def history_spec() -> DatasetSpec:
    return load_spec(ROOT / "specs/bike_sharing.yaml")


@pytest.fixture(scope="module")
def january(bike_raw: pd.DataFrame) -> pd.DataFrame:
    return bike_raw[bike_raw["dteday"].between(DAYS[0], DAYS[-1])].reset_index(drop=True)


@pytest.fixture
def computing(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many points each materialization computed features for (the function training uses, counted)."""
    calls: list[int] = []

    def counted(spec: DatasetSpec, rows: pd.DataFrame, points: pd.DataFrame | None = None) -> pd.DataFrame:
        calls.append(len(rows if points is None else points))
        return history_features(spec, rows, points)

    monkeypatch.setattr(store, "history_features", counted)
    return calls


def from_scratch(engine: sa.Engine, spec: DatasetSpec, start: str, end: str) -> pd.DataFrame:
    """The features of the window's points computed from the whole source table as it is now."""
    with engine.connect() as connection:
        raw = pd.read_sql(sa.select(database.source_table(engine, spec)), connection)
    valid = Contract(spec).validate(raw).valid
    rows = store.keyed(spec, valid).join(history_features(spec, valid)).set_index(store.EVENT_TIME)
    return rows[(rows.index >= start) & (rows.index <= f"{end}T23:59:59")].sort_index()


def assert_same_features(found: pd.DataFrame, expected: pd.DataFrame, spec: DatasetSpec) -> None:
    names = spec.history.names()
    got = found.set_index(store.EVENT_TIME).reindex(expected.index)[names].to_numpy(dtype="float64")
    want = expected[names].to_numpy(dtype="float64")
    assert ((got == want) | (np.isnan(got) & np.isnan(want))).all()


def test_the_example_has_the_rows_the_operations_pick(january) -> None:
    assert len(january) == ROWS


def test_a_window_whose_days_did_not_change_is_read_not_computed(db_url, history_spec, january, computing) -> None:
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, january)
    store.materialize(engine, history_spec)
    assert computing == [len(january)]

    again = store.materialize(engine, history_spec, "2011-01-20", "2011-01-25")
    assert computing == [len(january)]  # nothing computed: read back
    assert again.written == 0 and again.points == january["dteday"].between("2011-01-20", "2011-01-25").sum()
    assert_same_features(again.rows, from_scratch(engine, history_spec, "2011-01-20", "2011-01-25"), history_spec)
    assert store.materialize(engine, history_spec).written == 0 and len(computing) == 1
    engine.dispose()


def test_a_changed_day_recomputes_the_windows_that_read_it_and_only_those(db_url, history_spec, january,
                                                                          computing) -> None:  # fmt: skip
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, january)
    store.materialize(engine, history_spec)
    table = database.source_table(engine, history_spec)
    noon = january[january["dteday"] == "2011-01-10"].iloc[12]
    with engine.begin() as connection:  # a late actual on the 10th
        connection.execute(sa.update(table).where(table.c.dteday == noon["dteday"], table.c.hr == noon["hr"])
                           .values(cnt=table.c.cnt + 100))  # fmt: skip

    later = store.materialize(engine, history_spec, "2011-01-18", "2011-01-25")  # reads from the 11th
    assert len(computing) == 1
    reading = store.materialize(engine, history_spec, "2011-01-11", "2011-01-17")  # reads from the 4th
    assert len(computing) == 2 and reading.written > 0
    for window, done in ((("2011-01-18", "2011-01-25"), later), (("2011-01-11", "2011-01-17"), reading)):
        assert_same_features(done.rows, from_scratch(engine, history_spec, *window), history_spec)
    engine.dispose()


def late_actual(engine: sa.Engine, spec: DatasetSpec, row: pd.Series, by: int) -> None:
    table = database.source_table(engine, spec)
    with engine.begin() as connection:
        connection.execute(sa.update(table).where(table.c.dteday == row["dteday"], table.c.hr == row["hr"])
                           .values(cnt=table.c.cnt + by))  # fmt: skip


def test_a_day_changed_and_changed_back_does_not_bring_back_features_computed_in_between(db_url, history_spec,
                                                                                        january) -> None:  # fmt: skip
    """The 10th changes; the 11th-12th are computed with it (a write that reads the 10th but cannot record it:
    the 10th's own points are not in it); the 10th changes back: the 11th-12th must be computed again."""
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, january)
    store.materialize(engine, history_spec)
    noon = january[january["dteday"] == "2011-01-10"].iloc[12]
    late_actual(engine, history_spec, noon, 100)
    store.materialize(engine, history_spec, "2011-01-11", "2011-01-12")
    late_actual(engine, history_spec, noon, -100)
    done = store.materialize(engine, history_spec, "2011-01-11", "2011-01-12")
    assert done.written > 0
    assert_same_features(done.rows, from_scratch(engine, history_spec, "2011-01-11", "2011-01-12"), history_spec)
    engine.dispose()


def test_a_write_that_computed_some_of_a_days_readers_does_not_vouch_for_the_others(db_url, history_spec,
                                                                                    january) -> None:  # fmt: skip
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, january)
    store.materialize(engine, history_spec)
    late_actual(engine, history_spec, january[january["dteday"] == "2011-01-10"].iloc[12], 100)
    store.materialize(engine, history_spec, "2011-01-11", "2011-01-12")  # reads the 10th, computes 2 of its 8 days
    for day in ("2011-01-10", "2011-01-17"):  # the 10th's own afternoon, and a week later
        done = store.materialize(engine, history_spec, day, day)
        assert done.written > 0
        assert_same_features(done.rows, from_scratch(engine, history_spec, day, day), history_spec)
    engine.dispose()


def test_feature_rows_deleted_or_broken_since_are_computed_again(db_url, history_spec, january, computing) -> None:
    """The troubleshooting page's fix for a broken feature table: delete its rows, materialize their window."""
    engine = database.engine_for(db_url)
    database.seed(engine, history_spec, january)
    store.materialize(engine, history_spec)
    features = store.feature_table(engine, history_spec)
    with engine.begin() as connection:
        deleted = connection.execute(sa.delete(features).where(features.c.event_time.like("2011-01-20T1%")))
        broken = connection.execute(sa.update(features).where(features.c.event_time.like("2011-01-22T0%"))
                                    .values(cnt_lag_1h=-5.0))  # fmt: skip
        touched = {"2011-01-20": deleted.rowcount, "2011-01-22": broken.rowcount}
    for day, rows in touched.items():
        done = store.materialize(engine, history_spec, day, day)
        assert rows > 5 and done.written == rows
        assert_same_features(store.read(engine, history_spec, day, f"{day}T23:59:59"),
                             from_scratch(engine, history_spec, day, day), history_spec)  # fmt: skip
    assert len(computing) == 3
    engine.dispose()


def test_a_day_is_recorded_only_when_every_point_reading_it_was_computed() -> None:
    days = pd.Index(["2011-01-09", "2011-01-10", "2011-01-11", "2011-01-20", "2011-01-21"])
    # points from the 10th to the 21st: a day reaching 7 days ahead is recorded if its readers all lie within
    assert inputs.recordable(days, "2011-01-10", "2011-01-21", 7).tolist() == [False, True, True, False, False]
    # from 05:00 on the 10th: the 10th's early hours were not computed
    assert inputs.recordable(days, "2011-01-10T05:00:00", None, 7).tolist() == [False, False, True, True, True]


OPERATIONS = st.lists(
    st.one_of(
        st.tuples(st.just("change"), st.integers(0, ROWS - 1), st.sampled_from([-5, -1, 1, 5])),
        st.tuples(st.just("remove"), st.integers(0, ROWS - 1)),
        st.tuples(st.just("put back"), st.integers(0, ROWS - 1)),
        st.tuples(st.just("materialize"), st.integers(0, len(DAYS) - 1), st.integers(0, 3)),
    ),
    min_size=1,
    max_size=10,
)


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(operations=OPERATIONS)
def test_whatever_happened_in_between_the_table_holds_what_a_recomputation_gives(
    tmp_path_factory, history_spec, january, operations
) -> None:
    """Values changed and changed back, rows removed and put back, windows materialized in any order: each
    materialization's rows, and the table, hold what computing from the whole source table gives."""
    engine = database.engine_for(f"sqlite:///{tmp_path_factory.mktemp('inputs') / 'source.db'}")
    database.seed(engine, history_spec, january)
    table = database.source_table(engine, history_spec)
    store.materialize(engine, history_spec)
    for operation in operations:
        kind, number, *rest = operation
        if kind == "materialize":
            start, end = DAYS[number], DAYS[min(number + rest[0], len(DAYS) - 1)]
            done = store.materialize(engine, history_spec, start, end)
            expected = from_scratch(engine, history_spec, start, end)
            assert_same_features(done.rows, expected, history_spec)
            assert_same_features(store.read(engine, history_spec, start, f"{end}T23:59:59"), expected, history_spec)
            continue
        original = january.iloc[[number]]
        where = (table.c.dteday == original["dteday"].iloc[0], table.c.hr == original["hr"].iloc[0])
        with engine.begin() as connection:
            if kind == "change":
                connection.execute(sa.update(table).where(*where).values(cnt=sa.func.abs(table.c.cnt + rest[0])))
                continue
            connection.execute(sa.delete(table).where(*where))
            if kind == "put back":
                connection.execute(sa.insert(table), database.records(original))
    engine.dispose()
