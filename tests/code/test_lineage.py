"""The pipeline's lineage: dvc.lock matches code and params, and every stage depends on what it reads and runs."""

import ast
import json
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tiffin.storage import paths

from ..conftest import ROOT, Project
from .test_layers import imported_modules, package_modules


def test_no_stage_dependency_or_param_differs_from_the_committed_lock() -> None:
    """Outputs may be missing (a fresh clone has none); code and params must be what dvc.lock recorded."""
    done = subprocess.run(
        [Path(sys.executable).parent / "dvc", "status", "--json"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    stale = {
        stage: change
        for stage, changes in json.loads(done.stdout or "{}").items()
        for change in changes
        if isinstance(change, dict) and ({"changed deps", "changed params"} & set(change))
        and not all(v == "deleted" for kind in change.values() for v in kind.values())
    }  # fmt: skip
    assert not stale, f"run `dvc repro` and commit dvc.lock: {stale}"


# -- every stage depends on what it really reads and runs --------------------------------------------------------


def _defines_something(path: Path) -> bool:
    """An __init__.py that imports nothing (a docstring, a version) changes nothing a stage computes."""
    body = ast.parse(path.read_text()).body
    return path.name != "__init__.py" or any(isinstance(node, ast.Import | ast.ImportFrom) for node in body)


def code_run_by(script: Path) -> set[str]:
    """Every module of the package a stage script runs: its imports, transitively (a stage that loads a pickled
    model also runs the feature code inside it: see below)."""
    modules = package_modules(ROOT / "src")
    todo, seen = [script], set()
    while todo:
        for name in imported_modules(todo.pop(), modules) - seen:
            seen.add(name)
            todo.append(modules[name])
    return {str(modules[name].relative_to(ROOT)) for name in seen if _defines_something(modules[name])}


def test_every_stage_depends_on_the_spec_file_and_all_the_code_it_runs() -> None:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    features = code_run_by(ROOT / "src/tiffin/features/encoder.py") | {"src/tiffin/features/__init__.py"}
    for name, stage in stages.items():
        deps = set(stage["deps"])
        assert "${spec}" in deps, f"{name} does not depend on the spec file's content"
        needed = code_run_by(ROOT / f"pipelines/{name}.py") | {f"pipelines/{name}.py"}
        if {"models/model.joblib", "models/registration.json"} & deps:  # unpickles the model: runs its features
            needed |= features | {"src/tiffin/features/encoder.py"}
        assert needed <= deps, f"{name} runs {sorted(needed - deps)} without depending on it"
        assert not {d for d in deps if d.startswith("src/")} - needed, f"{name} depends on code it does not run"


def test_dvc_yaml_names_the_artefacts_that_the_paths_module_names() -> None:
    """One place for artefact paths: every data/, eval/ and models/ path of dvc.yaml is a `tiffin.storage.paths`."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    named = {str(value) for value in vars(paths).values() if isinstance(value, Path)}
    in_pipeline = set()
    for stage in stages.values():
        for entry in [entry for kind in ("deps", "outs", "metrics", "plots") for entry in stage.get(kind, [])]:
            path = entry if isinstance(entry, str) else next(iter(entry))
            if path.startswith(("data/", "eval/", "models/")):
                in_pipeline.add(path)
    plots = {path for path in in_pipeline if path.startswith(f"{paths.PLOTS}/")}
    assert in_pipeline - plots <= named, f"dvc.yaml paths missing from tiffin.storage.paths: {in_pipeline - named}"
    assert str(paths.PLOTS) in named and plots


def test_editing_a_slice_in_the_spec_makes_evaluate_stale(project: Project) -> None:
    """The stage that reads the slices re-runs when they change (it did not while only the spec's path was a param)."""
    shutil.copy(ROOT / "dvc.lock", project.path / "dvc.lock")
    spec_file = project.path / "specs/bike_sharing.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["evaluation"]["slices"].append({"column": "holiday"})
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    status = json.loads(project.run("dvc", "status", "--json").stdout)
    spec_changed = {
        name
        for name, changes in status.items()
        for change in changes
        if isinstance(change, dict) and change.get("changed deps", {}).get("specs/bike_sharing.yaml") == "modified"
    }
    assert "evaluate" in spec_changed
    assert spec_changed == set(yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"])
