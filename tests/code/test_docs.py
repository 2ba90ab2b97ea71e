"""The docs stay true: the site builds strictly, every command they show exists, and the how-tos run.

How-to pages (docs/how-to/*.md) are walk-throughs: their ```bash blocks run, in order, in a fresh copy of the
project, and a ```yaml block titled with a path (```yaml title="params.yaml") sets those keys in that file
first, as the reader is told to. Any other block is shown, not run; but every `tiffin ...` or `make ...`
line of every block, in every page and the README, must name a real command, options and make target.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path

import click
import pytest
import yaml

from tiffin.cli.main import main as cli

from ..conftest import ROOT, Project, make_project

DOCS = ROOT / "docs"
FENCE = re.compile(r"^(?P<indent> *)```(?P<lang>[\w-]*)(?P<attrs>[^\n]*)\n(?P<body>.*?)^(?P=indent)```", re.M | re.S)
TITLE = re.compile(r'title="([^"]+)"')
PAGES = sorted(DOCS.rglob("*.md"))
HOW_TOS = sorted((DOCS / "how-to").glob("*.md"))


def blocks(page: Path) -> list[tuple[str, str, str]]:
    """(language, attributes, body) of each fenced block, in page order; the body's indent removed."""
    found = []
    for match in FENCE.finditer(page.read_text(encoding="utf-8")):
        indent = len(match["indent"])
        body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
        found.append((match["lang"], match["attrs"], body))
    return found


def command_lines(body: str) -> list[str]:
    """The shell lines of a block, continuations joined, prompts and comments dropped."""
    text = re.sub(r"\\\n\s*", " ", body)
    lines = [line.strip().removeprefix("$ ") for line in text.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def words_of(line: str) -> list[list[str]]:
    """The commands of a shell line, as words: split at `&&`, `||`, `;`, `|`; quotes honoured; `<<` ends it."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=True)  # `#` starts a comment, as in a shell
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # a quote that closes on a later line (a JSON body): the words before it still count
        tokens = line.split(" '")[0].split()
    commands, words = [], []
    for token in tokens:
        if token in ("&&", "||", ";", "|", "(", ")", "<<", ">", ">>", "<"):
            commands, words = [*commands, words] if words else commands, []
            if token in ("<<", ">", ">>", "<"):
                break
        else:
            words.append(token)
    return [*commands, words] if words else commands


def shown_commands(program: str) -> list[tuple[str, str]]:
    """(page, command) for every command that runs `program`, in every page, the README included."""
    found = []
    for page in [*PAGES, ROOT / "README.md"]:
        for lang, _, body in blocks(page):
            if lang in ("bash", "console", "sh", "shell", "text", ""):
                for line in command_lines(body):
                    for words in words_of(line):
                        if words[0] == program:
                            found.append((page.relative_to(ROOT).as_posix(), shlex.join(words)))
    return found


def unknown_in(words: list[str]) -> str | None:
    """What in a `tiffin` command line click would not know: a command, or an option of the command."""
    command: click.Command = cli
    words = list(words)
    while isinstance(command, click.Group) and words and not words[0].startswith("-"):
        name = words.pop(0)
        if name not in command.commands:
            return f"no command {name!r} (there are {sorted(command.commands)})"
        command = command.commands[name]
    if command.context_settings.get("ignore_unknown_options"):
        return None
    options = {opt for param in command.params for opt in [*param.opts, *param.secondary_opts]} | {"--help"}
    for word in words:
        option = word.split("=")[0]
        if option.startswith("--") and option not in options:
            return f"{' '.join(command.name or '')}: no option {option} (there are {sorted(options)})"
    return None


def test_the_site_builds_strictly_with_no_warning(tmp_path: Path) -> None:
    built = subprocess.run(
        ["mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )  # fmt: skip
    assert built.returncode == 0, built.stderr[-3000:]
    assert "WARNING" not in built.stderr, built.stderr
    for page in ("reference/spec", "reference/params", "reference/cli", "reference/http", "reference/settings",
                 "reference/exit-codes", "reference/make", "how-to/own-table", "troubleshooting"):  # fmt: skip
        assert (tmp_path / "site" / page / "index.html").exists(), page


@pytest.mark.parametrize(("page", "line"), shown_commands("tiffin"))
def test_every_tiffin_command_shown_exists(page: str, line: str) -> None:
    assert unknown_in(shlex.split(line)[1:]) is None, f"{page}: {line}"


def test_every_make_target_shown_exists() -> None:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    shown = shown_commands("make")
    assert len(shown) > 5
    for page, line in shown:
        named = [word for word in shlex.split(line)[1:] if "=" not in word and not word.startswith("-")]
        assert set(named) <= targets, f"{page}: {line}"


def test_the_command_checks_can_fail() -> None:
    assert unknown_in(["batch", "--since-last"]) is None
    assert "no option --nope" in unknown_in(["batch", "--nope"])
    assert "no command 'bogus'" in unknown_in(["models", "bogus"])


def deep_merge(into: dict, keys: dict) -> dict:
    for key, value in keys.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            deep_merge(into[key], value)
        else:
            into[key] = value
    return into


def walk_through(page: Path) -> list[tuple[str, str]]:
    """The steps a how-to asks for: ("run", commands) and ("set", path + YAML)."""
    steps = []
    for lang, attrs, body in blocks(page):
        if lang == "bash":
            steps.append(("run", body))
        elif lang == "yaml" and (title := TITLE.search(attrs)):
            steps.append(("set", title.group(1), body))
    return steps


def fresh_copy(path: Path) -> Project:
    """A copy of the project as a clone has it, sharing this checkout's environment (so `make` finds it set up)."""
    project = make_project(path)
    for name in ("Makefile", "uv.lock", "tests"):
        source, target = ROOT / name, path / name
        if source.is_dir():
            shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
        else:
            shutil.copy2(source, target)
    (path / ".venv").symlink_to(ROOT / ".venv")
    (path / "models").mkdir(exist_ok=True)
    shutil.copy2(ROOT / "models/champion.json", path / "models/champion.json")  # the example's, as committed
    project.commit("as a clone has it")
    return project


RUNNABLE = [page for page in HOW_TOS if any(step[0] == "run" for step in walk_through(page))]


@pytest.mark.slow
@pytest.mark.parametrize("page", RUNNABLE, ids=[page.stem for page in RUNNABLE])
def test_a_how_to_runs_as_written(page: Path, tmp_path: Path) -> None:
    project = fresh_copy(tmp_path / "project")
    env = {**project.env, "NO_MKDOCS_2_WARNING": "1"}
    for step in walk_through(page):
        if step[0] == "set":
            target = project.path / step[1]
            current = yaml.safe_load(target.read_text()) if target.exists() else {}
            target.write_text(yaml.safe_dump(deep_merge(current or {}, yaml.safe_load(step[2])), sort_keys=False))
        else:
            done = subprocess.run(["bash", "-euo", "pipefail", "-c", step[1]], cwd=project.path, env=env,
                                  capture_output=True, text=True, timeout=900)  # fmt: skip
            assert done.returncode == 0, (
                f"{page.name}:\n{step[1]}\nexited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
            )


def test_a_how_to_that_runs_nothing_names_the_test_that_runs_its_path() -> None:
    assert RUNNABLE, "no how-to runs"
    for page in HOW_TOS:
        if page.name != "index.md" and page not in RUNNABLE:
            named = re.findall(r"tests/[\w/]+\.py", page.read_text())
            assert named and all((ROOT / test).exists() for test in named), f"{page.name} runs nothing, names no test"


def test_every_command_and_option_says_what_it_is_for() -> None:
    """The CLI reference is made from the help texts: an option without one would be a bare name there."""

    def silent(command: click.Command, path: str) -> list[str]:
        if isinstance(command, click.Group):
            return [found for name, sub in command.commands.items() for found in silent(sub, f"{path} {name}")]
        bare = [f"{path} {'/'.join(p.opts)}" for p in command.params if isinstance(p, click.Option) and not p.help]
        return bare + ([path] if not command.help else [])

    assert silent(cli, "tiffin") == []


def test_every_environment_variable_read_is_in_the_settings_table() -> None:
    from tiffin.storage.settings import ENVIRONMENT

    files = [*ROOT.glob("src/**/*.py"), *ROOT.glob("service/*.py"), *ROOT.glob("loadtests/*.py"),
             *ROOT.glob("benchmarks/*.py"), ROOT / "Makefile", *ROOT.glob("tests/**/*.py")]  # fmt: skip
    read = {name for file in files for name in re.findall(r"\bTIFFIN_[A-Z_]+[A-Z]\b", file.read_text())}
    assert read - {v.name for v in ENVIRONMENT} == set()
