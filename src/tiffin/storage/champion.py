"""Which model serves: the champion, an optional challenger, and the history of every change, per dataset.

The state is a small JSON file in git, `models/champion.json`: for each dataset (the spec's `name`, which is
also its models' name in the store) the champion's and challenger's tags and the history of every promotion
and rollback, each with its reason and (for a gated promotion) the decision with its numbers. One project
can train several datasets in turn: each keeps its own champion, and a rollback never crosses datasets.
Git history is the audit trail, a pull request is the review, and no registry server is needed: the models
themselves stay in the BentoML store.

`serving_models` is the one answer to "which model serves" for the API, the batch runner and the CLI.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from tiffin.storage import paths, settings
from tiffin.storage.clock import iso_now

# The kinds of event in the history (the strings are what champion.json holds).
PROMOTE, ROLLBACK, SET_CHALLENGER = "promote", "rollback", "challenger"


def dataset_of(tag: str) -> str:
    """The dataset a model belongs to: its name in the store, which the register stage sets to the spec's name."""
    return tag.split(":", 1)[0]


def current_dataset() -> str | None:
    """`TIFFIN_DATASET`, else the spec params.yaml names (in a project), else the registered model's dataset."""
    if named := settings.env("TIFFIN_DATASET"):
        return named
    params = settings.project_file(paths.PARAMS)
    if params is not None:
        spec_path = params.parent / settings.load_params(params)["spec"]
        if spec_path.exists():  # only its name: the spec itself is checked where it is used
            return yaml.safe_load(spec_path.read_text(encoding="utf-8"))["name"]
    tag = registered_tag()
    return dataset_of(tag) if tag else None


@dataclass
class ChampionState:
    """One dataset's champion, challenger and history (one entry of champion.json)."""

    champion: str | None = None
    challenger: str | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    dataset: str | None = field(default=None, compare=False)  # the key in the file; set by the first promotion

    # -- file ------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path: Path | None = None, dataset: str | None = None) -> ChampionState:
        """`dataset`'s state (default: the current dataset; or the only one in the file); empty if it has none."""
        entries = _read_entries(path or settings.champion_file())
        dataset = dataset or current_dataset() or (next(iter(entries)) if len(entries) == 1 else None)
        return cls(**entries.get(dataset, {}), dataset=dataset)

    def save(self, path: Path | None = None) -> Path:
        """Write this dataset's entry; the other datasets' entries are kept as they are."""
        if self.dataset is None:
            raise ValueError("a champion state without a dataset cannot be saved: promote a model first")
        path = path or settings.champion_file() or paths.CHAMPION
        entries = _read_entries(path)
        entries[self.dataset] = {k: v for k, v in asdict(self).items() if k != "dataset"}
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"datasets": dict(sorted(entries.items()))}, indent=2) + "\n")
        return path

    # -- changes ---------------------------------------------------------------------------------

    def _claim(self, tag: str) -> None:
        """A model may only serve its own dataset: a state takes the dataset of its first model."""
        self.dataset = self.dataset or dataset_of(tag)
        if dataset_of(tag) != self.dataset:
            raise ValueError(f"{tag} is a model of dataset {dataset_of(tag)!r}, not of {self.dataset!r}")

    def promote(self, tag: str, *, by: str, reason: str, decision: dict | None = None, at: str | None = None) -> None:
        self._claim(tag)
        if tag == self.champion:
            raise ValueError(f"{tag} is already the champion")
        self.history.append(_event(PROMOTE, tag, self.champion, by, reason, at, decision))
        self.champion = tag
        if self.challenger == tag:
            self.challenger = None

    def rollback(self, *, by: str, reason: str, at: str | None = None) -> str:
        """Make the champion's predecessor champion again; returns its tag."""
        previous = self.previous_champion()
        if previous is None:
            raise LookupError(f"{self.champion or 'no model'} has no earlier champion to roll back to")
        self.history.append(_event(ROLLBACK, previous, self.champion, by, reason, at, None))
        self.champion = previous
        return previous

    def set_challenger(self, tag: str | None, *, by: str, reason: str, at: str | None = None) -> None:
        if tag is not None:
            self._claim(tag)
        if tag is not None and tag == self.champion:
            raise ValueError(f"{tag} is the champion; a challenger is another model")
        self.history.append(_event(SET_CHALLENGER, tag, self.challenger, by, reason, at, None))
        self.challenger = tag

    # -- questions -------------------------------------------------------------------------------

    def lineage(self) -> list[str]:
        """Champions in order, as a stack: a promotion pushes, a rollback pops back to the one before."""
        stack: list[str] = []
        for event in self.history:
            if event["event"] == PROMOTE:
                stack.append(event["tag"])
            elif event["event"] == ROLLBACK:
                stack.pop()
        return stack

    def previous_champion(self) -> str | None:
        stack = self.lineage()
        return stack[-2] if len(stack) >= 2 else None

    def rolled_back(self, tag: str) -> dict | None:
        """The rollback that removed `tag`, unless it was promoted again since."""
        for event in reversed(self.history):
            if event["event"] == PROMOTE and event["tag"] == tag:
                return None
            if event["event"] == ROLLBACK and event["previous"] == tag:
                return event
        return None

    def decision_for(self, tag: str) -> dict | None:
        """The gate's decision recorded when `tag` was promoted, if it was promoted by the gate."""
        for event in reversed(self.history):
            if event["event"] == PROMOTE and event["tag"] == tag and event.get("decision"):
                return event["decision"]
        return None

    def role_of(self, tag: str) -> str | None:
        return "champion" if tag == self.champion else "challenger" if tag == self.challenger else None


def _event(kind: str, tag: str | None, previous: str | None, by: str, reason: str, at: str | None,
           decision: dict | None) -> dict[str, Any]:  # fmt: skip
    event = {"event": kind, "tag": tag, "previous": previous, "at": at or iso_now(), "by": by, "reason": reason}
    if decision is not None:
        event["decision"] = decision
    return event


def _read_entries(path: Path | None) -> dict[str, dict[str, Any]]:
    """Every dataset's entry in the file. A file from before datasets (one champion at the top) is read as the
    entry of its models' dataset."""
    if path is None or not path.exists():
        return {}
    content = json.loads(path.read_text())
    if "datasets" in content:
        return content["datasets"]
    tags = [content.get("champion"), *(event["tag"] for event in content.get("history", []))]
    named = next((tag for tag in tags if tag), None)
    return {dataset_of(named): content} if named else {}


def all_states(path: Path | None = None) -> list[ChampionState]:
    """Every dataset's state, by dataset name."""
    entries = _read_entries(path or settings.champion_file())
    return [ChampionState(**entry, dataset=name) for name, entry in sorted(entries.items())]


def registered_tag() -> str | None:
    """The tag the pipeline registered (models/registration.json), here or in the project; None if none."""
    path = settings.project_file(paths.REGISTRATION)
    return json.loads(path.read_text())["tag"] if path else None


def model_option(value: str | None) -> str | None:
    """A model named by an option or a variable: empty or 'none' (any case) means no model."""
    return None if value is None or value.strip().lower() in ("", "none") else value


@dataclass(frozen=True)
class ServingModels:
    champion: str  # answers every request and scores every batch row
    challenger: str | None  # scored in shadow on the same rows; never answers


def serving_models(champion_path: Path | None = None) -> ServingModels:
    """`TIFFIN_MODEL` / `TIFFIN_CHALLENGER`, else the champion file, else (before any promotion) the
    registered model as champion. `TIFFIN_CHALLENGER=none` turns shadow scoring off."""
    state = ChampionState.load(champion_path)
    champion = model_option(settings.env("TIFFIN_MODEL")) or state.champion or registered_tag()
    if champion is None:
        raise LookupError("no model to serve: run `make repro` (registers one) or set TIFFIN_MODEL=name:version")
    challenger = os.environ.get("TIFFIN_CHALLENGER", state.challenger or "")
    return ServingModels(champion, model_option(challenger))
