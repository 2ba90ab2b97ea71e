"""Stage split: train / validation / test as consecutive periods, the test set the latest.

Never random: a model is always scored on hours that come after the ones it learned from. Give the
boundaries as dates (`validation_start`, `test_start`) or as shares of the time span.

A spec with `history` gets its history features here, before the split, point-in-time from every row known
(unlabeled rows included: their other columns are known), so that a test row reads the training rows
before it exactly as production will.
"""

import pandas as pd

from tiffin.cli.stage import StageError, start
from tiffin.core.params import Split
from tiffin.features.history import history_features
from tiffin.storage import paths
from tiffin.storage.files import read_parquet, write_parquet


def boundaries(moments: pd.Series, split: Split) -> tuple[pd.Timestamp, pd.Timestamp]:
    if split.test_start is not None:
        return pd.Timestamp(split.validation_start), pd.Timestamp(split.test_start)
    ordered = moments.sort_values(ignore_index=True)
    n = len(ordered)
    test = ordered.iloc[int(n * (1 - split.test_share))]
    validation = ordered.iloc[int(n * (1 - split.test_share - split.validation_share))]
    return validation, test


def empty_period(name: str, moments: pd.Series, validation_start: pd.Timestamp, test_start: pd.Timestamp) -> str:
    """Why a period has no rows, in the terms of params.yaml: the data's span against the split's bounds."""
    bounds = {"train": f"before {validation_start}", "validation": f"from {validation_start} to before {test_start}",
              "test": f"from {test_start}"}  # fmt: skip
    return (
        f"the {name} period ({bounds[name]}) has no rows: the ingested rows run from {moments.min()} to "
        f"{moments.max()}. Set split.validation_start and split.test_start inside that span, or give "
        "split.validation_share and split.test_share instead (e.g. 0.15 and 0.15) and remove the dates"
    )


def main() -> None:
    spec, params, log = start("split")
    clean = read_parquet(paths.CLEAN)
    if spec.history:
        known = pd.concat([clean, read_parquet(paths.UNLABELED)], ignore_index=True)
        clean = clean.join(history_features(spec, known, clean))
        log.info("history features %s, horizon %s", ", ".join(spec.history.names()), spec.history.horizon)
    moments = spec.event_time(clean)
    validation_start, test_start = boundaries(moments, Split.from_params(params))
    order = moments.argsort(kind="stable")
    clean, moments = clean.iloc[order].reset_index(drop=True), moments.iloc[order].reset_index(drop=True)
    parts = {
        "train": clean[moments < validation_start],
        "validation": clean[(moments >= validation_start) & (moments < test_start)],
        "test": clean[moments >= test_start],
    }
    for name, part in parts.items():
        if part.empty:
            raise StageError(empty_period(name, moments, validation_start, test_start))
        write_parquet(part, paths.SPLITS[name])
    log.info(
        "train %d rows (< %s), validation %d, test %d (>= %s)",
        len(parts["train"]),
        validation_start,
        len(parts["validation"]),
        len(parts["test"]),
        test_start,
    )


if __name__ == "__main__":
    main()
