"""One process at a time per job and name: the lock the batch runner and the retraining share.

On PostgreSQL a session advisory lock, held by a connection of its own; on a SQLite file an exclusive
`flock` on a file beside it. Either goes when its process dies, so a killed run never leaves a lock
behind: the runs table's `running` rows are what a dead run leaves, and the next holder marks them
abandoned.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Engine


class Busy(RuntimeError):
    """Another process holds the lock."""


class ProcessLock:
    """`with ProcessLock(engine, "batch", "rentals"):` holds the lock or raises `busy` (a Busy subclass)
    naming what holds it. An in-memory SQLite database has no other process to exclude: no lock."""

    busy: type[Busy] = Busy
    what: str = "another run holds"  # said before the name: "... holds rentals"

    def __init__(self, engine: Engine, job: str, name: str) -> None:
        self.engine, self.job, self.name = engine, job, name
        self.key = zlib.crc32(f"tiffin-{job}:{name}".encode())
        self._connection: sa.Connection | None = None
        self._file: IO[str] | None = None

    @property
    def path(self) -> Path:
        """The SQLite lock file (the batch runner's name for it, kept so that old and new runs exclude each other)."""
        return Path(f"{self.engine.url.database}.{self.name}.{self.job}-lock")

    def __enter__(self) -> ProcessLock:
        if self.engine.dialect.name == "postgresql":
            self._advisory()
        elif self.engine.url.database not in (None, "", ":memory:"):
            self._flock()
        return self

    def _advisory(self) -> None:
        self._connection = self.engine.connect()
        got = self._connection.execute(sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self.key}).scalar()
        self._connection.commit()
        if not got:
            self._connection.close()
            self._connection = None
            raise self.busy(f"{self.what} {self.name} (PostgreSQL advisory lock {self.key})")

    def _flock(self) -> None:
        self._file = self.path.open("a")
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.close()
            self._file = None
            raise self.busy(f"{self.what} {self.name} (lock file {self.path})") from None

    def __exit__(self, *_: object) -> None:
        if self._connection is not None:
            with contextlib.suppress(Exception):  # a lost connection has released the lock already
                # The connection goes back to the pool, still in its session: unlock explicitly.
                self._connection.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self.key})
                self._connection.commit()
            with contextlib.suppress(Exception):
                self._connection.close()
            self._connection = None
        if self._file is not None:
            self._file.close()
            self._file = None
