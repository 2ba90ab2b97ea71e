"""Stage ingest: snapshot the source table's rows for the window in params.yaml (`ingest`).

History is append-only, so the window is what this stage depends on; moving the window takes a new
snapshot, and `dvc repro --force --single-item ingest` re-takes it on purpose.
"""

import pandas as pd
from tqdm import tqdm

from tiffin.cli.stage import StageError, start
from tiffin.storage import database, paths, settings
from tiffin.storage.files import write_parquet


def main() -> None:
    spec, params, log = start("ingest")
    engine = database.engine_for(settings.db_url())
    window = (str(params["start"]), str(params["end"]))
    try:
        chunks = list(tqdm(database.read_window(engine, spec, *window), desc="ingest", unit="chunk", disable=None))
    except LookupError as missing:
        raise StageError(f"{missing} (source: {engine.url.render_as_string()})") from missing
    if not chunks:
        raise StageError(
            f"no rows in {spec.source.table} for {window[0]} .. {window[1]}: seed it with `tiffin db seed`"
        )
    snapshot = pd.concat(chunks, ignore_index=True)
    write_parquet(snapshot, paths.SNAPSHOT)
    log.info("%d rows of %s for %s .. %s -> %s", len(snapshot), spec.source.table, *window, paths.SNAPSHOT)


if __name__ == "__main__":
    main()
