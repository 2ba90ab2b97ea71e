"""The bulk path to SQLite and PostgreSQL: ADBC (Arrow-native drivers), Arrow in, Arrow out, one transaction a write.

The batch runner reads and writes its chunks through it, and the prediction log appends through it: far faster
than row-by-row inserts.
"""

from __future__ import annotations

import pandas as pd
import pyarrow as pa
import sqlalchemy as sa
from sqlalchemy.engine import Engine


class BulkConnection:
    """An ADBC connection for the bulk path: Arrow in, Arrow out, one transaction per chunk."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url
        if url.get_backend_name() == "sqlite":
            import adbc_driver_sqlite.dbapi as driver

            self.connection = driver.connect(url.database)
            with self.connection.cursor() as cursor:  # wait for the other connection, don't fail
                cursor.execute("PRAGMA busy_timeout = 60000")
        elif url.get_backend_name() == "postgresql":
            import adbc_driver_postgresql.dbapi as driver

            self.connection = driver.connect(url.set(drivername="postgresql").render_as_string(hide_password=False))
        else:
            raise NotImplementedError(f"batch scoring supports SQLite and PostgreSQL, not {url.get_backend_name()}")
        self.engine = engine

    def sql(self, statement: sa.sql.ClauseElement) -> str:
        """SQLAlchemy builds the statement; values are rendered (and quoted) by the dialect."""
        return str(statement.compile(self.engine, compile_kwargs={"literal_binds": True}))

    def read(self, statement: sa.sql.ClauseElement) -> pd.DataFrame:
        with self.connection.cursor() as cursor:
            cursor.execute(self.sql(statement))
            return cursor.fetch_arrow_table().to_pandas()

    def write(self, batches: list[tuple[sa.Table, pa.Table, dict]], finally_sql: list[str]) -> None:
        """Insert each table's rows (plus constant columns), skipping keys already there; commit once."""
        with self.connection.cursor() as cursor:
            try:
                for table, rows, constants in batches:
                    if rows.num_rows == 0:
                        continue
                    cursor.adbc_ingest(f"staging_{table.name}", rows, mode="replace", temporary=True)
                    names = [*rows.column_names, *constants]
                    values = [f'"{name}"' for name in rows.column_names]
                    values += [self.sql(sa.literal(value, table.c[name].type)) for name, value in constants.items()]
                    columns = ", ".join(f'"{name}"' for name in names)
                    cursor.execute(
                        f'INSERT INTO "{table.name}" ({columns}) SELECT {", ".join(values)} '
                        f'FROM "staging_{table.name}" WHERE true ON CONFLICT DO NOTHING'
                    )
                for statement in finally_sql:
                    cursor.execute(statement)
                self.connection.commit()
            except BaseException:
                self.connection.rollback()
                raise

    def close(self) -> None:
        self.connection.close()
