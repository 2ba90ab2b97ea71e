"""The retraining ledger in the source database: every retrain run with its cause, and every check.

`retrain_runs`: one row per retrain that started, with the trigger that caused it (and every trigger that
fired), the day it judged by (`as_of`, the check's "today"), the champion before, the candidate, its status
and times. `retrain_checks`: one row per `tiffin retrain` check, with whether the champion's production error
was over the limit, so that the metric trigger can ask for N consecutive checks across processes.

Runs are excluded from each other by `storage.locks` (the lock dies with its process); a run left `running`
is marked `abandoned` by the next holder of the lock, as the batch runner does with its runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import date

import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from tiffin.storage.clock import utcnow
from tiffin.storage.database import create_tables

RUNNING, PROMOTED, NOT_PROMOTED, FAILED, ABANDONED = "running", "promoted", "not promoted", "failed", "abandoned"
DIED = "the process ended without finishing (killed, or its database connection was lost)"


@dataclass(frozen=True)
class LastRun:
    run_id: str
    trigger: str
    as_of: date
    status: str


class RetrainLedger:
    """The two tables (created if missing) and what the retraining asks of them."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata = sa.MetaData()
        self.runs = sa.Table(
            "retrain_runs", metadata,
            sa.Column("run_id", sa.String(36), primary_key=True),
            sa.Column("dataset", sa.String(200), nullable=False, index=True),
            sa.Column("trigger", sa.String(40), nullable=False),  # the cause
            sa.Column("triggers", sa.Text(), nullable=False),  # every trigger that fired, comma-separated
            sa.Column("detail", sa.Text(), nullable=False),  # the cause's own account
            sa.Column("as_of", sa.Date(), nullable=False),
            sa.Column("champion", sa.String(200)),
            sa.Column("candidate", sa.String(200)),
            sa.Column("status", sa.String(20), nullable=False),
            sa.Column("started_at", sa.DateTime(), nullable=False),
            sa.Column("finished_at", sa.DateTime()),
            sa.Column("error", sa.Text()),
        )  # fmt: skip
        self.checks = sa.Table(
            "retrain_checks", metadata,
            sa.Column("check_id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("dataset", sa.String(200), nullable=False, index=True),
            sa.Column("champion", sa.String(200), nullable=False),
            sa.Column("as_of", sa.Date(), nullable=False),
            sa.Column("checked_at", sa.DateTime(), nullable=False),
            sa.Column("metric_over", sa.Boolean(), nullable=False),
            sa.Column("fired", sa.Text(), nullable=False),
            sa.Column("decision", sa.Text(), nullable=False),
        )  # fmt: skip
        create_tables(engine, metadata)

    def abandon_running(self, dataset: str) -> int:
        """Runs left `running` while nobody holds the lock: their process is gone. Call with the lock held."""
        runs = self.runs
        with self.engine.begin() as connection:
            done = connection.execute(
                runs.update()
                .where(runs.c.dataset == dataset, runs.c.status == RUNNING)
                .values(status=ABANDONED, error=sa.func.coalesce(runs.c.error, DIED), finished_at=utcnow())
            )
        return done.rowcount

    def start(self, dataset: str, cause: str, fired: list[str], detail: str, as_of: date, champion: str) -> str:
        run_id = str(uuid.uuid4())
        with self.engine.begin() as connection:
            connection.execute(self.runs.insert().values(
                run_id=run_id, dataset=dataset, trigger=cause, triggers=",".join(fired), detail=detail, as_of=as_of,
                champion=champion, status=RUNNING, started_at=utcnow(),
            ))  # fmt: skip
        return run_id

    def finish(self, run_id: str, status: str, candidate: str | None = None, error: str | None = None) -> None:
        with self.engine.begin() as connection:
            connection.execute(self.runs.update().where(self.runs.c.run_id == run_id).values(
                status=status, candidate=candidate, error=error, finished_at=utcnow(),
            ))  # fmt: skip

    def last_run(self, dataset: str) -> LastRun | None:
        """The latest run by the day it judged by (any status: a failed or abandoned run was a retrain too)."""
        runs = self.runs
        latest = (runs.c.as_of.desc(), runs.c.started_at.desc())
        query = sa.select(runs.c.run_id, runs.c.trigger, runs.c.as_of, runs.c.status).where(runs.c.dataset == dataset)
        query = query.order_by(*latest).limit(1)
        with self.engine.connect() as connection:
            row = connection.execute(query).first()
        return None if row is None else LastRun(*row)

    def record_check(self, dataset: str, champion: str, as_of: date, metric_over: bool, fired: list[str],
                     decision: str) -> None:  # fmt: skip
        with self.engine.begin() as connection:
            connection.execute(self.checks.insert().values(
                dataset=dataset, champion=champion, as_of=as_of, checked_at=utcnow(), metric_over=metric_over,
                fired=",".join(fired), decision=decision,
            ))  # fmt: skip

    def metric_streak(self, dataset: str, champion: str) -> int:
        """How many of this champion's latest checks in a row found its production error over the limit."""
        checks = self.checks
        query = (sa.select(checks.c.metric_over).where(checks.c.dataset == dataset, checks.c.champion == champion)
                 .order_by(checks.c.check_id.desc()))  # fmt: skip
        streak = 0
        with self.engine.connect() as connection:
            for (over,) in connection.execute(query):
                if not over:
                    break
                streak += 1
        return streak

    def run_table(self, dataset: str | None = None) -> pd.DataFrame:
        """Every run, oldest first (for reports and tests)."""
        query = sa.select(self.runs).order_by(self.runs.c.started_at)
        if dataset is not None:
            query = query.where(self.runs.c.dataset == dataset)
        with self.engine.connect() as connection:
            result = connection.execute(query)
            return pd.DataFrame(result.all(), columns=list(result.keys()))
