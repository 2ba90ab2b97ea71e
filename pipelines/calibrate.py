"""Stage calibrate: each feature's drift threshold for the model `register` just stored.

The training period is replayed in windows of `monitor.window_days` against the reference monitoring will
use (`monitor.reference`), and each threshold put where healthy windows cross it `monitor.alarms_per_quarter`
times a quarter. The thresholds go with the model (its folder in the store, where `tiffin monitor` reads
them) and to eval/drift_thresholds.json, versioned with the rest of the pipeline's outputs.
"""

import logging

from tiffin.cli.stage import start
from tiffin.core.params import Monitor
from tiffin.lifecycle.calibration import calibrate_model, summary
from tiffin.storage import paths
from tiffin.storage.files import read_json, write_json
from tiffin.storage.modelstore import ModelStore


def main() -> None:
    _, section, _ = start("monitor")
    log = logging.getLogger("tiffin.calibrate")
    model = ModelStore().load(read_json(paths.REGISTRATION)["tag"])
    model.calibration_file.unlink(missing_ok=True)  # never a calibration made under other settings
    try:
        found = calibrate_model(model, Monitor.from_params(section))
    except ValueError as short:  # too short a history: monitoring keeps the params' thresholds, and says so
        log.warning("not calibrated: %s", short)
        write_json({"model": model.tag, "calibrated": False, "reason": str(short)}, paths.DRIFT_THRESHOLDS)
        return
    found.save(paths.DRIFT_THRESHOLDS)
    log.info("%s", summary(found, model.calibration_file))


if __name__ == "__main__":
    main()
