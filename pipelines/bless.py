"""Stage bless: the promotion gate. Score the candidate and the champion on the same, latest holdout.

The candidate (the model `register` just stored) becomes champion only if it beats the current one
overall by `bless.margin` and worsens no slice by more than `bless.slice_tolerance`; the first model
is promoted without a baseline. The decision, with its numbers per slice, goes to eval/blessing.json
and into the promotion history in models/champion.json, under the spec's dataset: a new dataset's first
model is a first model, whatever other datasets the file holds.

models/champion.json is state, like the model store: neither a dependency nor an output of this
stage, so promotions and rollbacks by hand never make dvc.lock stale. The decision is reproducible
all the same: for a candidate that is already champion the recorded decision is written again.
"""

from tiffin.cli.stage import StageError, start
from tiffin.lifecycle.promotion import GateRules, decide, format_decision
from tiffin.storage import paths
from tiffin.storage.champion import ChampionState
from tiffin.storage.files import read_json, read_parquet, write_json
from tiffin.storage.modelstore import ModelStore, NotFound


def main() -> None:
    spec, params, log = start("bless")
    candidate = read_json(paths.REGISTRATION)["tag"]
    state = ChampionState.load(dataset=spec.name)
    if candidate == state.champion:
        decision = state.decision_for(candidate) or {
            "candidate": candidate,
            "champion": candidate,
            "blessed": True,
            "reasons": ["already the champion (promoted by hand)"],
        }
        write_json(decision, paths.BLESSING)
        log.info("%s is already the champion", candidate)
        return
    holdout, store = read_parquet(paths.TEST), ModelStore()
    rules = GateRules.from_params(params)
    champion = None
    if state.champion:
        try:
            current = store.load(state.champion)
        except NotFound as missing:
            raise StageError(
                f"the champion {state.champion} (models/champion.json) is not in the model store "
                f"{store.path}: import it (`bentoml models import`) to compare"
            ) from missing
        champion = (current.tag, current.pipeline.predict(holdout))
    decision = decide(spec, holdout, (candidate, store.load(candidate).pipeline.predict(holdout)), champion, rules)
    if decision["blessed"] and (rollback := state.rolled_back(candidate)):
        decision |= {
            "blessed": False,
            "reasons": [
                f"rolled back on {rollback['at']} ({rollback['reason']}): "
                "promote it by hand (`tiffin models promote`) if wanted"
            ],
        }
    write_json(decision, paths.BLESSING)
    log.info("\n%s", format_decision(decision))
    if decision["blessed"]:
        state.promote(candidate, by="bless stage", reason="; ".join(decision["reasons"]), decision=decision)
        log.info("promoted %s (was %s): %s", candidate, champion[0] if champion else "none", state.save())


if __name__ == "__main__":
    main()
