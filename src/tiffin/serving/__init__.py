"""Serving: the fast scorer, the service's configuration, limits, auth, metrics and documents, the dashboard, and a
BentoML server process for tests, benchmarks and the release gate."""
