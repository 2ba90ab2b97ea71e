"""Modeling: the estimator built from the spec and params, the naive baseline, and the metrics that judge them."""
