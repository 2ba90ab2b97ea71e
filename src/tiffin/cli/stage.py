"""The start of every DVC stage script (pipelines/): logging, the spec params.yaml names, the stage's params."""

from __future__ import annotations

import logging
from typing import Any

from tiffin.core.config_errors import ConfigError
from tiffin.core.spec import DatasetSpec, load_spec
from tiffin.storage.settings import load_params


def start(stage: str) -> tuple[DatasetSpec, dict[str, Any], logging.Logger]:
    """Logging, the spec named in params.yaml, and this stage's own params section."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        params = load_params()
        return load_spec(params["spec"]), params.get(stage) or {}, logging.getLogger(f"tiffin.{stage}")
    except ConfigError as wrong:  # the file, the key and what is allowed; a traceback would bury it
        raise StageError(str(wrong)) from None


class StageError(SystemExit):
    """A stage stopping on purpose, with a message for the person who ran it (exit code 1)."""

    def __init__(self, message: str) -> None:
        logging.getLogger("tiffin").error(message)
        super().__init__(1)
