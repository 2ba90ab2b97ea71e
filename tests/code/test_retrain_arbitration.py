"""Retraining arbitration on SQLite and PostgreSQL: one run at a time (two real processes), the cooldown, the metric
trigger held over consecutive checks, and a record per run with its cause."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from datetime import date, timedelta
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from tiffin.core import exitcodes
from tiffin.lifecycle import retraining
from tiffin.lifecycle.retraining import RetrainLock, RetrainRules, Trigger, arbitrate
from tiffin.storage import database as db
from tiffin.storage import retrain_ledger
from tiffin.storage.modelstore import LoadedModel
from tiffin.storage.retrain_ledger import RetrainLedger

from ..conftest import BIN, ROOT

DATASET = "bike_demand"  # the name of the spec params.yaml names: what `tiffin retrain` locks
RULES = RetrainRules(cooldown_days=14, metric_checks=3)
DAY = date(2012, 6, 1)


def raw(*fired: str) -> list[Trigger]:
    """The four triggers as `check` gives them, `fired` firing."""
    names = ("new_data", "schedule", "metric_drop", "request")
    return [Trigger(name, name in fired, f"{name} detail") for name in names]


def test_the_metric_drop_fires_only_when_it_holds_for_n_consecutive_checks(db_url):
    ledger = RetrainLedger(db.engine_for(db_url))
    over = [True, True, False, True, True, True, True]
    plans = [arbitrate(ledger, DATASET, "m:1", raw(*(["metric_drop"] if o else [])), RULES, now=DAY) for o in over]
    assert [p.retrain for p in plans] == [False, False, False, False, False, True, True]
    assert plans[5].cause.name == "metric_drop" and "over the limit at 3 consecutive checks (needs 3)" in (
        plans[5].cause.detail
    )
    # A new champion starts its own count: the old one's checks say nothing about it.
    fresh = arbitrate(ledger, DATASET, "m:2", raw("metric_drop"), RULES, now=DAY)
    assert not fresh.retrain and "at 1 consecutive checks" in fresh.fired[2].detail


def test_a_dry_run_records_no_check(db_url):
    ledger = RetrainLedger(db.engine_for(db_url))
    for _ in range(3):
        arbitrate(ledger, DATASET, "m:1", raw("metric_drop"), RULES, now=DAY, record=False)
    assert ledger.metric_streak(DATASET, "m:1") == 0
    assert arbitrate(ledger, DATASET, "m:1", raw("metric_drop"), RULES, now=DAY).retrain is False


def test_no_retrain_within_the_cooldown_unless_requested(db_url):
    ledger = RetrainLedger(db.engine_for(db_url))
    run = ledger.start(DATASET, "new_data", ["new_data"], "28 days of new data", DAY, "m:1")
    ledger.finish(run, retrain_ledger.NOT_PROMOTED, "m:2")
    held = arbitrate(ledger, DATASET, "m:1", raw("new_data", "schedule"), RULES, now=DAY + timedelta(days=13))
    assert not held.retrain and held.held.startswith("cooldown: the last retrain (new_data, not promoted)")
    assert "13 days before 2012-06-14 (cooldown 14 days)" in held.decision
    assert arbitrate(ledger, DATASET, "m:1", raw("request"), RULES, now=DAY + timedelta(days=1)).cause.name == "request"
    assert arbitrate(ledger, DATASET, "m:1", raw("new_data"), RULES, now=DAY + timedelta(days=14)).retrain
    assert arbitrate(ledger, "other", "o:1", raw("new_data"), RULES, now=DAY).retrain  # another dataset's own clock
    without = RetrainRules(cooldown_days=0)
    assert arbitrate(ledger, DATASET, "m:1", raw("new_data"), without, now=DAY).retrain


def test_the_cause_is_the_most_pressing_trigger(db_url):
    ledger = RetrainLedger(db.engine_for(db_url))
    rules = RetrainRules(metric_checks=1, cooldown_days=0)
    pairs = (["new_data", "schedule"], ["new_data", "metric_drop"], ["metric_drop", "request"])
    cause = [arbitrate(ledger, DATASET, "m:1", raw(*fired), rules, now=DAY).cause.name for fired in pairs]
    assert cause == ["schedule", "metric_drop", "request"]


def test_a_stopped_pipeline_is_recorded_as_failed_with_its_cause(db_url, bike_spec, bike_raw, tmp_path):
    engine = db.engine_for(db_url)
    db.seed(engine, bike_spec, bike_raw.head(48))
    params_file = tmp_path / "params.yaml"  # a project without dvc.yaml: `dvc repro` refuses
    params_file.write_text('spec: specs/x.yaml\ningest: {start: "2011-01-01", end: "2011-01-01"}\n'
                           'split: {validation_share: 0.2, test_share: 0.2}\n')  # fmt: skip
    champion = LoadedModel("bike_demand:old", None, bike_spec, {}, Path("."))
    ledger = RetrainLedger(engine)
    plan = arbitrate(ledger, bike_spec.name, champion.tag, raw("new_data"), RULES, now=date(2011, 1, 2))
    with pytest.raises(retraining.PipelineStopped):
        retraining.run_recorded(ledger, plan, champion, params_file, now=date(2011, 1, 2), engine=engine)
    runs = ledger.run_table(bike_spec.name)
    assert len(runs) == 1
    record = runs.iloc[0]
    assert (record["trigger"], record["triggers"], record["status"]) == ("new_data", "new_data", "failed")
    assert record["detail"] == "new_data detail" and record["champion"] == "bike_demand:old"
    assert record["as_of"] == date(2011, 1, 2) and record["finished_at"] >= record["started_at"]
    assert "PipelineStopped" in record["error"]


HOLDER = """
import sys, time
from datetime import date
from tiffin.lifecycle.retraining import RetrainLock
from tiffin.storage.database import engine_for
from tiffin.storage.retrain_ledger import RetrainLedger
engine = engine_for(sys.argv[1])
with RetrainLock(engine, sys.argv[2]):
    RetrainLedger(engine).start(sys.argv[2], "request", ["request"], "--force", date(2012, 6, 1), "m:1")
    print("held", flush=True)
    time.sleep(120)
"""


def wait_until_free(engine: Engine, seconds: float = 10.0) -> None:
    """PostgreSQL frees a killed client's advisory lock when the server process notices the closed socket and exits:
    a moment after the kill, not at once (CI once took the lock in between). SQLite's lock file is free at once."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with RetrainLock(engine, DATASET):
                return
        except retraining.RetrainBusy:
            time.sleep(0.05)


def test_one_retrain_at_a_time_across_processes_and_a_killed_one_is_abandoned(db_url, tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, db_url, DATASET], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        second = subprocess.run([str(BIN / "tiffin"), "retrain", "--db", db_url, "--params", str(ROOT / "params.yaml")],
                                cwd=tmp_path, capture_output=True, text=True, env=os.environ, timeout=120)  # fmt: skip
        assert second.returncode == exitcodes.BUSY == 75, second.stderr
        assert f"retrain not started: another retrain is running for {DATASET}" in second.stderr
        engine = db.engine_for(db_url)
        with pytest.raises(retraining.RetrainBusy), RetrainLock(engine, DATASET):
            pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    wait_until_free(engine)
    with RetrainLock(engine, DATASET):  # the lock died with its process; the run it left is abandoned
        ledger = RetrainLedger(engine)
        assert ledger.abandon_running(DATASET) == 1
    record = ledger.run_table(DATASET).iloc[0]
    assert record["status"] == "abandoned" and record["error"] == retrain_ledger.DIED
    # The abandoned run still counts for the cooldown: it was a retrain that started.
    assert ledger.last_run(DATASET).status == "abandoned"


def test_the_busy_exit_code_is_documented():
    from tiffin.cli.exits import EXIT_CODES_BY_COMMAND, epilog

    assert exitcodes.BUSY in EXIT_CODES_BY_COMMAND["tiffin retrain"]
    assert "75 busy: another retrain of this dataset is running" in epilog("tiffin retrain")
