"""What every pipeline stage shares: its params, its spec, logging, and byte-stable outputs."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

from tiffin.settings import PARAMS_FILE
from tiffin.spec import DatasetSpec, load_spec


def load_params(path: str | Path = PARAMS_FILE) -> dict[str, Any]:
    with open(path, encoding="utf-8") as handle:
        return yaml.safe_load(handle) or {}


def start(stage: str) -> tuple[DatasetSpec, dict[str, Any], logging.Logger]:
    """Logging, the spec named in params.yaml, and this stage's own params section."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    params = load_params()
    return load_spec(params["spec"]), params.get(stage) or {}, logging.getLogger(f"tiffin.{stage}")


def write_parquet(frame: pd.DataFrame, path: str | Path) -> None:
    """Same rows in, same bytes out: no index, no timestamps in the file's metadata."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pandas(frame, preserve_index=False)
    pq.write_table(table, path, compression="zstd")


def read_parquet(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def write_json(data: Any, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


class StageError(SystemExit):
    """A stage stopping on purpose, with a message for the person who ran it (exit code 1)."""

    def __init__(self, message: str) -> None:
        logging.getLogger("tiffin").error(message)
        super().__init__(1)
