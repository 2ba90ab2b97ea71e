"""What each command's exit code means: one table, shown by `--help` and in the docs' exit-code reference.

The numbers are `tiffin.core.exitcodes`, which the jobs that decide them use too (the batch run's states,
the monitor's alarm, the load test's verdict); this table says what they mean to whoever reads them.
"""

from __future__ import annotations

from tiffin.core.exitcodes import ALARM, BUSY, FAILURE, OBJECTIVES_MISSED, OK, PARTIAL, SERVER_FAILED, USAGE

GATE = {OK: "every objective met", OBJECTIVES_MISSED: "an objective missed (the report says which)"}
EXIT_CODES_BY_COMMAND: dict[str, dict[int, str]] = {
    "tiffin batch": {
        OK: "every row of the window scored",
        PARTIAL: "partial: some rows refused by the contract, kept in prediction_rejects",
        FAILURE: "failure: the run is recorded as failed in batch_runs",
        USAGE: "usage: a bad window or option",
        BUSY: "busy: another run is scoring this source; try again later",
    },
    "tiffin monitor": {
        OK: "no threshold crossed",
        ALARM: "a threshold crossed (the report says which)",
        FAILURE: "failure",
    },
    "tiffin loadtest": {**GATE, SERVER_FAILED: "the server failed to start or to answer"},
    "tiffin container gate": {**GATE, SERVER_FAILED: "the container failed to start or to answer"},
    "tiffin retrain": {
        OK: "done, or nothing to do (no trigger fired, or the cooldown holds it)",
        FAILURE: "the pipeline stopped (the report says where); the run is recorded as failed in retrain_runs",
        BUSY: "busy: another retrain of this dataset is running; try again later",
    },
    "tiffin validate": {OK: "every row keeps the contract", FAILURE: "some rows break it (listed; --rejects)"},
    "tiffin db seed": {OK: "loaded", FAILURE: "--strict, and the file repeats a key: nothing loaded"},
    "tiffin models check": {OK: "the registered model is in the store", FAILURE: "it is missing"},
    "any other command": {OK: "done", FAILURE: "an error, said in one line", USAGE: "a bad option or argument"},
}


def epilog(command: str) -> str:
    """The command's exit codes, for its `--help`."""
    codes = EXIT_CODES_BY_COMMAND[command]
    return "Exit codes: " + "; ".join(f"{code} {meaning}" for code, meaning in sorted(codes.items())) + "."
