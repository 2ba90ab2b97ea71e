"""Stage bless: the promotion gate. Score the candidate and the champion on the same, latest holdout.

The candidate (the model `register` just stored) becomes champion only if it beats the current one
overall by `bless.margin` and worsens no slice by more than `bless.slice_tolerance`; the first model
is promoted without a baseline. The decision, with its numbers per slice, goes to eval/blessing.json
and into the promotion history in models/champion.json.

models/champion.json is state, like the model store: neither a dependency nor an output of this
stage, so promotions and rollbacks by hand never make dvc.lock stale. The decision is reproducible
all the same: for a candidate that is already champion the recorded decision is written again.
"""

from bentoml.exceptions import NotFound

from tiffin import registry
from tiffin.promotion import ChampionState, GateRules, decide, format_decision
from tiffin.stage import StageError, read_json, read_parquet, start, write_json

HOLDOUT = "data/split/test.parquet"
DECISION = "eval/blessing.json"


def main() -> None:
    spec, params, log = start("bless")
    candidate = read_json("models/registration.json")["tag"]
    state = ChampionState.load()
    if candidate == state.champion:
        decision = state.decision_for(candidate) or {
            "candidate": candidate,
            "champion": candidate,
            "blessed": True,
            "reasons": ["already the champion (promoted by hand)"],
        }
        write_json(decision, DECISION)
        log.info("%s is already the champion", candidate)
        return
    holdout = read_parquet(HOLDOUT)
    rules = GateRules.from_params(params)
    champion = None
    if state.champion:
        try:
            current = registry.load(state.champion)
        except NotFound as missing:
            raise StageError(
                f"the champion {state.champion} (models/champion.json) is not in the model store "
                f"{registry.store_path()}: import it (`bentoml models import`) to compare"
            ) from missing
        champion = (current.tag, current.pipeline.predict(holdout))
    decision = decide(spec, holdout, (candidate, registry.load(candidate).pipeline.predict(holdout)), champion, rules)
    if decision["blessed"] and (rollback := state.rolled_back(candidate)):
        decision |= {
            "blessed": False,
            "reasons": [
                f"rolled back on {rollback['at']} ({rollback['reason']}): "
                "promote it by hand (`tiffin models promote`) if wanted"
            ],
        }
    write_json(decision, DECISION)
    log.info("\n%s", format_decision(decision))
    if decision["blessed"]:
        state.promote(candidate, by="bless stage", reason="; ".join(decision["reasons"]), decision=decision)
        log.info("promoted %s (was %s): %s", candidate, champion[0] if champion else "none", state.save())


if __name__ == "__main__":
    main()
