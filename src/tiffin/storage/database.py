"""The source database: seeding it with raw rows, and reading a time window back.

Any SQLAlchemy URL works; SQLite (embedded default) and PostgreSQL are tested. Raw rows are stored
as they come (text hours, missing values and all): cleaning them is the contract's job, later.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from tqdm import tqdm

from tiffin.core.spec import DatasetSpec

SEED_CHUNK_ROWS = 5_000


class DatabaseUnusable(RuntimeError):
    """A database URL that cannot be used as given: the message says why and what to do."""


def sqlite_copy(url: str, folder: Path, name: str) -> str:
    """A SQLite source copied to `folder` (the copy's URL), for a server whose log must not enter the source's
    (a load test, a benchmark); any other database's `url` as it is."""
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return url
    copy = Path(folder).resolve() / f"{name}.db"
    shutil.copyfile(parsed.database, copy)
    return f"sqlite:///{copy}"


def engine_for(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for `url`; for a SQLite file, its folder is created first, unless `must_exist` (a reader such as
    the batch runner never creates a database: a mistyped path is an error, not a new empty file).

    SQLite connections are not pooled: the batch runner's bulk driver (ADBC) carries its own copy of
    SQLite, and two copies in one process must never have the same file open at once (their locks
    do not see each other). Opening a SQLite file is cheap.
    """
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError:
        raise DatabaseUnusable(
            f"{url!r} is not a database URL: use e.g. sqlite:///data/tiffin.db or postgresql+psycopg://user@host/db"
        ) from None
    if parsed.get_backend_name() == "sqlite":
        if parsed.database not in (None, "", ":memory:"):
            path = Path(parsed.database)
            if must_exist and not path.is_file():
                raise DatabaseUnusable(
                    f"no SQLite database at {path.resolve()}: check --db, or seed it (`tiffin db seed`)"
                )
            path.parent.mkdir(parents=True, exist_ok=True)
        return sa.create_engine(url, poolclass=sa.pool.NullPool)
    try:
        return sa.create_engine(url, pool_pre_ping=True)
    except sa.exc.NoSuchModuleError:
        raise DatabaseUnusable(
            f"{parsed.render_as_string()}: no database driver {parsed.drivername!r} (SQLite and PostgreSQL are tested)"
        ) from None
    except sa.exc.ArgumentError as bad:
        raise DatabaseUnusable(f"cannot use {parsed.render_as_string()}: {bad}") from None


def _sql_type(series: pd.Series) -> sa.types.TypeEngine:
    if pd.api.types.is_bool_dtype(series):
        return sa.Boolean()
    if pd.api.types.is_integer_dtype(series):
        return sa.BigInteger()
    if pd.api.types.is_float_dtype(series):
        return sa.Float(precision=53)
    if pd.api.types.is_datetime64_any_dtype(series):
        return sa.DateTime()
    return sa.Text()


def create_tables(engine: Engine, metadata: sa.MetaData) -> None:
    """`create_all`, safe when processes race to create the same tables (an API's workers starting together on a
    fresh database): create_all checks, then creates, and a table another process made in between fails the
    creation. If every table is there after such a failure, it was the race, not an error."""
    try:
        metadata.create_all(engine)
    except sa.exc.DatabaseError:
        inspector = sa.inspect(engine)
        if not all(inspector.has_table(table.name, schema=table.schema) for table in metadata.sorted_tables):
            raise


def source_table(engine: Engine, spec: DatasetSpec, like: pd.DataFrame | None = None) -> sa.Table:
    """The source table, reflected; created from `like`'s columns (key as primary key) if absent."""
    metadata = sa.MetaData()
    if sa.inspect(engine).has_table(spec.source.table):
        return sa.Table(spec.source.table, metadata, autoload_with=engine)
    if like is None:
        raise LookupError(f"table {spec.source.table!r} does not exist: run `tiffin db seed` first")
    columns = [sa.Column(name, _sql_type(like[name]), primary_key=name in spec.key) for name in like.columns]
    table = sa.Table(spec.source.table, metadata, *columns)
    create_tables(engine, metadata)
    return table


def _dialect_insert(engine: Engine) -> object:
    """The dialect's INSERT, which knows ON CONFLICT (SQLite and PostgreSQL)."""
    if engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        raise NotImplementedError(f"idempotent writes support SQLite and PostgreSQL, not {engine.dialect.name}")
    return insert


def _insert_ignoring_existing(engine: Engine, table: sa.Table, key: list[str]) -> sa.Insert:
    """INSERT that skips rows whose key is already there, so seeding twice adds nothing."""
    return _dialect_insert(engine)(table).on_conflict_do_nothing(index_elements=key)


def upsert(engine: Engine, table: sa.Table, key: list[str]) -> sa.Insert:
    """INSERT that replaces the other columns of a row whose key is already there."""
    insert = _dialect_insert(engine)(table)
    return insert.on_conflict_do_update(
        index_elements=key, set_={c.name: insert.excluded[c.name] for c in table.columns if c.name not in key}
    )


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as dicts with SQL NULL (None) where pandas has NaN/NA."""
    return frame.astype(object).where(frame.notna(), None).to_dict("records")


DUPLICATE_RULE = "duplicate key"
DUPLICATE_COLUMNS = ["row", "field", "value", "rule", "kept_row"]  # and the raw key columns after `row`


def _no_duplicates(key: list[str]) -> pd.DataFrame:
    return pd.DataFrame(columns=[*DUPLICATE_COLUMNS[:1], *key, *DUPLICATE_COLUMNS[1:]])


@dataclass(frozen=True)
class SeedResult:
    offered: int  # rows sent to the database: neither held back nor a later copy of a key
    inserted: int
    held_back: int  # rows after the cut-off, or with no readable time, when a cut-off was given
    duplicates: pd.DataFrame  # one reject per later copy of a key within the file (`duplicate_keys`)
    refused: bool = False  # nothing was loaded, because the file repeats keys and `refuse_duplicates` was asked

    @property
    def already_there(self) -> int:
        """Rows whose key the table already had (from an earlier seed): not loaded again."""
        return self.offered - self.inserted


def _key_codes(raw: pd.Series, canonical: pd.Series | None) -> np.ndarray:
    """One integer per row that is equal exactly for equal keys in this column: the canonical value where there
    is one, else the raw value as text (a value that does not parse is compared as written); -1 where missing."""
    present = raw.notna().to_numpy()
    codes = np.full(len(raw), -1, dtype="int64")
    taken = 0
    if canonical is not None:
        parsed = canonical.notna().to_numpy() & present
        if parsed.any():
            found, uniques = pd.factorize(canonical[parsed])
            codes[parsed], taken = found, len(uniques)
        present &= ~parsed
    if present.any():
        found, uniques = pd.factorize(raw[present])
        texts, _ = pd.factorize(pd.Index(uniques).map(str))  # 6 and '6' as text alike, as the database stores them
        codes[present] = texts[found] + taken
    return codes


def duplicate_keys(spec: DatasetSpec, raw: pd.DataFrame, canonical_keys: pd.DataFrame | None = None) -> pd.DataFrame:
    """Rows whose key repeats an earlier row's key in `raw` (file order): one reject per later copy, with its row,
    raw key, `field`, `value`, `rule` and `kept_row`, the row of the first copy (the one that is loaded).

    Rows are numbered as the contract numbers them in its rejects: by position among the data rows, from 0. Keys
    are compared in `canonical_keys` (the key columns in canonical form, from the contract's normaliser, so that
    '6am' and 6 are one hour) where given and readable, else as raw text. A row with a missing key value is no
    duplicate: the contract reports it.
    """
    key = spec.key
    if not set(key) <= set(raw.columns):  # no key to compare: the contract reports the missing column
        return _no_duplicates(key)
    codes = pd.DataFrame(
        {
            name: _key_codes(
                raw[name],
                canonical_keys[name] if canonical_keys is not None and name in canonical_keys else None,
            )
            for name in key
        }
    )
    complete = (codes >= 0).all(axis=1).to_numpy()
    repeated = codes.duplicated(keep=False).to_numpy() & complete
    if not repeated.any():
        return _no_duplicates(key)
    rows = np.flatnonzero(repeated)
    involved = codes.iloc[rows]
    kept = pd.Series(rows, index=involved.index).groupby([involved[name] for name in key], sort=False).transform("min")
    later = kept.to_numpy() != rows
    rows, kept_rows = rows[later], kept.to_numpy()[later]
    shown = raw.iloc[rows][key].astype(str).reset_index(drop=True)
    rejects = pd.DataFrame({"row": rows})
    rejects[key] = shown
    rejects["field"] = ", ".join(key)
    rejects["value"] = shown[key[0]].str.cat([shown[name] for name in key[1:]], sep=", ")
    rejects["rule"] = DUPLICATE_RULE
    rejects["kept_row"] = kept_rows
    return rejects


def read_seed_file(path: str | Path) -> pd.DataFrame:
    """The raw file as text-faithful as pandas allows (CSV, optionally compressed, or Parquet)."""
    path = Path(path)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.read_csv(path, keep_default_na=True)


def seed(
    engine: Engine,
    spec: DatasetSpec,
    raw: pd.DataFrame,
    held_back: np.ndarray | None = None,
    *,
    canonical_keys: pd.DataFrame | None = None,
    refuse_duplicates: bool = False,
) -> SeedResult:
    """Load raw rows into the source table; existing keys are left alone (idempotent).

    A key that repeats within `raw` is loaded once, from its first row; every later copy is left out and returned
    in `duplicates` (see `duplicate_keys`; `canonical_keys` makes '6am' and 6 one key), never dropped unsaid.
    With `refuse_duplicates`, a file that repeats a key loads nothing at all.
    `held_back` marks rows not to load yet (the contract's `held_back`: later hours, replayed as if arriving).
    """
    raw = raw.reset_index(drop=True)
    duplicates = duplicate_keys(spec, raw, canonical_keys)
    if refuse_duplicates and len(duplicates):
        return SeedResult(offered=0, inserted=0, held_back=0, duplicates=duplicates, refused=True)
    load = np.ones(len(raw), dtype=bool)
    load[duplicates["row"].to_numpy(dtype="int64")] = False
    held = 0
    if held_back is not None:
        held = int((held_back & load).sum())
        load &= ~held_back
    raw = raw[load]
    table = source_table(engine, spec, like=raw)
    statement = _insert_ignoring_existing(engine, table, spec.key)
    before = count_rows(engine, spec)
    with tqdm(total=len(raw), desc=f"seed {spec.source.table}", unit="row", disable=None) as progress:
        for start in range(0, len(raw), SEED_CHUNK_ROWS):
            chunk = raw.iloc[start : start + SEED_CHUNK_ROWS]
            with engine.begin() as connection:
                connection.execute(statement, records(chunk))
            progress.update(len(chunk))
    return SeedResult(
        offered=len(raw), inserted=count_rows(engine, spec) - before, held_back=held, duplicates=duplicates
    )


def count_rows(engine: Engine, spec: DatasetSpec) -> int:
    if not sa.inspect(engine).has_table(spec.source.table):
        return 0
    with engine.connect() as connection:
        return int(connection.execute(sa.text(f'SELECT COUNT(*) FROM "{spec.source.table}"')).scalar_one())


def window_span(engine: Engine, spec: DatasetSpec) -> tuple[object, object]:
    """The first and last value of the source's window column (None, None for an empty table)."""
    column = source_table(engine, spec).c[spec.source.window_column]
    with engine.connect() as connection:
        low, high = connection.execute(sa.select(sa.func.min(column), sa.func.max(column))).one()
    return low, high


class WindowError(ValueError):
    """A window that cannot be read, or whose start is after its end."""


def _moment(text: str, which: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise WindowError(
            f"{which} {text!r} is not an ISO date or date-time (YYYY-MM-DD, YYYY-MM-DDTHH:MM:SS)"
        ) from None
    return moment.replace(tzinfo=None) if moment.tzinfo is None else moment.astimezone(UTC).replace(tzinfo=None)


@dataclass(frozen=True)
class Window:
    """A closed window on a time column, either side optional: `start` inclusive, `end` inclusive at the column's
    granularity. A date-only end, or any end on a date column, takes in that whole day; a date-time end on a
    date-time column takes in that moment itself."""

    start: datetime | None = None
    end: datetime | None = None
    end_is_day: bool = False

    @classmethod
    def parse(cls, start: str | None, end: str | None) -> Window:
        """From ISO text (`--start`, `--end`); raises WindowError for unreadable text or a start after the end."""
        lower = _moment(start, "start") if start else None
        upper = _moment(end, "end") if end else None
        window = cls(lower, upper, bool(end) and len(end.strip()) <= len("YYYY-MM-DD"))
        if lower is not None and upper is not None and lower >= window.upper_exclusive():
            raise WindowError(f"the window's start {start} is after its end {end}")
        return window

    def upper_exclusive(self, day_granularity: bool = False) -> datetime:
        """The first moment after the window (for `end`: itself plus a microsecond, or the next day)."""
        assert self.end is not None
        if self.end_is_day or day_granularity:
            return datetime.combine(self.end.date() + timedelta(days=1), datetime.min.time())
        return self.end + timedelta(microseconds=1)

    def conditions(self, column: sa.ColumnElement, *, text_sep: str = " ") -> list[sa.ColumnElement]:
        """The window as SQL conditions on `column`, with bounds typed like it (compared by the database).

        Text columns hold ISO dates or date-times, whose text order is their time order (`text_sep` is what
        stands between date and time in them)."""
        day_column = isinstance(column.type, sa.Date) and not isinstance(column.type, sa.DateTime)
        found = []
        if self.start is not None:
            found.append(column >= _typed(column, self.start, text_sep))
        if self.end is not None:
            if self.end_is_day or day_column:
                found.append(column < _typed(column, self.upper_exclusive(day_granularity=True), text_sep))
            else:
                found.append(column <= _typed(column, self.end, text_sep))
        return found


def _typed(column: sa.ColumnElement, moment: datetime, text_sep: str) -> object:
    if isinstance(column.type, sa.DateTime):
        return moment
    if isinstance(column.type, sa.Date):
        return moment.date()
    if moment.time() == datetime.min.time():
        return moment.date().isoformat()
    return moment.isoformat(sep=text_sep)


def window_bounds(start: str, end: str) -> tuple[datetime, datetime]:
    """A closed window [start, end] as (start, first moment after it); a date-only end includes that whole day."""
    window = Window.parse(start, end)
    return window.start, window.upper_exclusive()


def window_query(engine: Engine, spec: DatasetSpec, start: str | None, end: str | None, *,
                 table: sa.Table | None = None) -> sa.Select:  # fmt: skip
    """The source rows whose window column lies in [start, end], ordered by key (from `table`, the source table as a
    caller reflected it; by default reflected here)."""
    table = source_table(engine, spec) if table is None else table
    conditions = Window.parse(start, end).conditions(table.c[spec.source.window_column])
    return sa.select(table).where(*conditions).order_by(*[table.c[k] for k in spec.key])


def read_window(
    engine: Engine, spec: DatasetSpec, start: str, end: str, chunk_rows: int = 50_000
) -> Iterator[pd.DataFrame]:
    """Raw rows whose window column lies in [start, end], ordered by key, in chunks."""
    query = window_query(engine, spec, start, end)
    with engine.connect().execution_options(stream_results=True) as connection:
        result = connection.execute(query)
        while rows := result.fetchmany(chunk_rows):
            frame = pd.DataFrame(rows, columns=list(result.keys()))
            yield frame.replace({None: np.nan})
