"""Stage train: fit the spec's pipeline (shared feature code -> estimator) on the training period.

Hyper-parameters come from `params.yaml: train` (over the spec's defaults); seeds are fixed there.
"""

import time

import joblib

from tiffin.cli.stage import start
from tiffin.modeling.evaluation import regression_metrics
from tiffin.modeling.pipeline import build_pipeline
from tiffin.storage import paths
from tiffin.storage.files import read_parquet, write_json


def main() -> None:
    spec, params, log = start("train")
    train = read_parquet(paths.TRAIN)
    validation = read_parquet(paths.VALIDATION)
    pipeline = build_pipeline(spec, params)
    estimator = type(pipeline.named_steps["model"]).__name__
    features = pipeline.named_steps["features"].get_feature_names_out()
    log.info("fitting %s on %d rows x %d features ...", estimator, len(train), len(features))
    began = time.perf_counter()
    pipeline.fit(train, train[spec.target])
    log.info("fitted in %.1f s", time.perf_counter() - began)
    paths.MODEL.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(pipeline, paths.MODEL)
    write_json(
        {
            "train": regression_metrics(train[spec.target].to_numpy(), pipeline.predict(train)),
            "validation": regression_metrics(validation[spec.target].to_numpy(), pipeline.predict(validation)),
        },
        paths.TRAIN_METRICS,
    )


if __name__ == "__main__":
    main()
