"""Where every pipeline artefact lives, relative to the project's root: the one place that names them.

`dvc.yaml` lists the same paths as deps and outs (tests/code/test_lineage.py holds the two together).
"""

from __future__ import annotations

from pathlib import Path

DVC_YAML = Path("dvc.yaml")  # what makes a folder a project checkout
PARAMS = Path("params.yaml")
SNAPSHOT = Path("data/snapshot/rows.parquet")  # ingest: the source rows of the window, as they are
CLEAN = Path("data/validated/clean.parquet")  # validate: rows that keep the contract, canonical
QUARANTINE = Path("data/validated/quarantine.parquet")  # validate: one line per problem of a rejected row
UNLABELED = Path("data/validated/unlabeled.parquet")  # valid rows whose target has not arrived
VALIDATION_REPORT = Path("eval/validation.json")
TRAIN = Path("data/split/train.parquet")
VALIDATION = Path("data/split/validation.parquet")
TEST = Path("data/split/test.parquet")  # the latest period: evaluate's test set and the gate's holdout
SPLITS = {"train": TRAIN, "validation": VALIDATION, "test": TEST}
MODEL = Path("models/model.joblib")
TRAIN_METRICS = Path("eval/train.json")
METRICS = Path("eval/metrics.json")
SLICE_METRICS = Path("eval/slices.json")  # evaluate: per slice and segment, apart from the headline metrics
SERIES_METRICS = Path("eval/series.json")  # evaluate: one verdict per series (specs with `series`)
PLOTS = Path("eval/plots")
REGISTRATION = Path("models/registration.json")  # register: the tag the pipeline stored
DRIFT_THRESHOLDS = Path("eval/drift_thresholds.json")  # calibrate: the registered model's drift thresholds
BLESSING = Path("eval/blessing.json")  # bless: the gate's latest decision
CHAMPION = Path("models/champion.json")  # which model serves: state kept in git, neither dep nor out
MODEL_STORE = Path(".bentoml")  # the project's BentoML home, unless BENTOML_HOME says otherwise
MONITOR_REPORTS = Path("reports/monitor")
