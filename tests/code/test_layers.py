"""The package's layers import only downward (import-linter's contracts in pyproject.toml), and no two modules
import each other in a circle, function-level imports included."""

import ast
import shutil
import subprocess
import sys
from pathlib import Path

from ..conftest import ROOT

LINT_IMPORTS = Path(sys.executable).parent / "lint-imports"


def package_modules(src: Path) -> dict[str, Path]:
    """Every module under `src` by its dotted name (a package by its own name, for its __init__.py)."""
    modules = {}
    for path in src.rglob("*.py"):
        name = ".".join(path.relative_to(src).with_suffix("").parts)
        modules[name.removesuffix(".__init__")] = path
    return modules


def imported_modules(path: Path, modules: dict[str, Path]) -> set[str]:
    """The `modules` that the file imports, wherever in the file the import stands (function level too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        found |= {name for name in names if name in modules}
    return found


def import_graph(src: Path) -> dict[str, set[str]]:
    """Module -> the package's modules it imports. A package's face (its __init__) is not an edge back to
    everything it holds."""
    modules = package_modules(src)
    return {
        name: {t for t in imported_modules(path, modules) if t != name and modules[t].name != "__init__.py"}
        for name, path in modules.items()
    }


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph.get(node, ()):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_two_modules_import_each_other_in_a_circle() -> None:
    assert circles(import_graph(ROOT / "src")) == []


def test_the_circle_check_finds_a_circle_through_a_function_level_import(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import thing\n")
    (package / "b.py").write_text("def thing():\n    from pkg import c\n")
    (package / "c.py").write_text("import pkg.a\n")
    assert circles(import_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_every_layer_imports_only_downward() -> None:
    done = subprocess.run([LINT_IMPORTS], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-3000:]


def test_an_upward_import_breaks_the_layer_contract(tmp_path: Path) -> None:
    """The contract bites: storage importing the batch runner (the circle this layout removed) is refused."""
    shutil.copytree(ROOT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    predlog = tmp_path / "src/tiffin/storage/predlog.py"
    predlog.write_text(predlog.read_text() + "\n\ndef _bulk():\n    from tiffin.jobs.batch import BatchJob\n")
    done = subprocess.run([LINT_IMPORTS], cwd=tmp_path, capture_output=True, text=True, env={"PYTHONPATH": "src"})
    assert done.returncode != 0 and "tiffin.storage.predlog -> tiffin.jobs.batch" in done.stdout
