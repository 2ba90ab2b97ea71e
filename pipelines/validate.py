"""Stage validate: normalise raw rows and enforce the contract; quarantine what fails.

Rejected rows are kept with their row number, key, field, value and rule. Rows whose target has not arrived
are no failure: they are unlabeled, kept apart (never trained on) and counted. The stage fails when the
quarantined share (contract failures only) exceeds `validate.max_quarantine_share`.
"""

from tiffin.cli.stage import StageError, start
from tiffin.core.contract import Contract
from tiffin.storage import paths
from tiffin.storage.files import read_parquet, write_json, write_parquet


def main() -> None:
    spec, params, log = start("validate")
    raw = read_parquet(paths.SNAPSHOT)
    result = Contract(spec).validate(raw)
    share = result.rejected_rows / max(len(raw), 1)
    write_parquet(result.valid, paths.CLEAN)
    write_parquet(result.rejects, paths.QUARANTINE)
    write_parquet(result.unlabeled, paths.UNLABELED)
    problems = result.rejects.groupby(["field", "rule"]).size().sort_values(ascending=False)
    write_json(
        {
            "rows": len(raw),
            "valid_rows": len(result.valid),
            "quarantined_rows": result.rejected_rows,
            "quarantined_share": round(share, 6),
            "unlabeled_rows": len(result.unlabeled),
            "problems": {f"{field}: {rule}": int(n) for (field, rule), n in problems.items()},
        },
        paths.VALIDATION_REPORT,
    )
    log.info(
        "%d rows valid, %d unlabeled (no target yet), %d quarantined (%.2f %%) -> %s",
        len(result.valid),
        len(result.unlabeled),
        result.rejected_rows,
        100 * share,
        paths.QUARANTINE,
    )
    limit = float(params["max_quarantine_share"])
    if share > limit:
        top = "; ".join(f"{field} {rule}: {n}" for (field, rule), n in problems.head(5).items())
        raise StageError(f"{100 * share:.2f} % of rows failed the contract (limit {100 * limit:.2f} %): {top}")


if __name__ == "__main__":
    main()
