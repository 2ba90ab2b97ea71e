"""The reference pages, made from the code when the site is built (an mkdocs hook), so they cannot drift from it:
the spec and params from their pydantic models, the command line from click (mkdocs-click), the HTTP API from
the service's OpenAPI parts, settings from `tiffin.storage.settings.ENVIRONMENT`, exit codes from
`tiffin.cli.exits`, make targets from the Makefile's `## target: what it does` lines."""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from mkdocs.structure.files import File, Files
from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
GENERATED = "_Generated from the code when the site is built: {source}._\n\n"


def on_files(files: Files, config: Any) -> Files:
    for uri, (title, source, render) in PAGES.items():
        content = f"# {title}\n\n" + GENERATED.format(source=source) + render()
        files.append(File.generated(config, uri, content=content))
    return files


# -- pydantic models as tables ------------------------------------------------------------------------------


def _anchor(model: type[BaseModel]) -> str:
    return model.__name__.lower()


def type_text(annotation: Any) -> str:
    """A field's type in words: `a` | `b` for a closed set, list of X, map of X to Y, a link to a nested model."""
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{value}`" for value in args)
    if origin in (Union, types.UnionType):
        kinds = [type_text(arg) for arg in args if arg is not type(None)]
        return " or ".join(kinds) + (" or null" if type(None) in args else "")
    if origin is list:
        return f"list of {type_text(args[0])}"
    if origin is dict:
        return f"map of {type_text(args[0])} to {type_text(args[1])}"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[{annotation.__name__}](#{_anchor(annotation)})"
    return getattr(annotation, "__name__", str(annotation)).replace("Any", "any")


def _nested(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _nested(arg)]


def models_in(root: type[BaseModel]) -> list[type[BaseModel]]:
    """The model and every model its fields hold, in the order they first appear."""
    found: list[type[BaseModel]] = []
    pending = [root]
    while pending:
        model = pending.pop(0)
        if model not in found:
            found.append(model)
            pending += [m for field in model.model_fields.values() for m in _nested(field.annotation)]
    return found


def _default(field: Any) -> str:
    if field.is_required():
        return "**required**"
    value = field.get_default(call_default_factory=True)
    if isinstance(value, BaseModel):
        return "see below"
    return f"`{json.dumps(value, default=str)}`"


def _rules(field: Any) -> str:
    rules = []
    for item in field.metadata:
        if pattern := getattr(item, "pattern", None):
            rules.append(f"matches `{pattern}`")
        for bound in ("gt", "ge", "lt", "le"):
            if (value := getattr(item, bound, None)) is not None:
                rules.append(f"{ {'gt': '>', 'ge': '≥', 'lt': '<', 'le': '≤'}[bound] } {value}")
    return "; ".join(rules)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def model_tables(root: type[BaseModel], heading: str = "##") -> str:
    out = []
    for model in models_in(root):
        doc = _cell(model.__doc__ or "") if model.__doc__ and model.__module__.startswith("tiffin") else ""
        extra = "unknown keys are refused" if model.model_config.get("extra") == "forbid" else "other keys allowed"
        out += [f"{heading} {model.__name__} {{ #{_anchor(model)} }}", "", doc, "", f"_{extra.capitalize()}._", ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, field in model.model_fields.items():
            description = "; ".join(filter(None, [field.description or "", _rules(field)]))
            key = field.alias or name
            out.append(f"| `{key}` | {type_text(field.annotation)} | {_default(field)} | {_cell(description)} |")
        out.append("")
    return "\n".join(out)


# -- the pages ----------------------------------------------------------------------------------------------


def spec_page() -> str:
    from tiffin.core.spec import DatasetSpec

    return (
        "A dataset spec is a YAML file in `specs/` that `params.yaml: spec` names: "
        "[Bring your own table](../how-to/own-table.md) walks through writing one, and "
        "[the spec and the contract](../concepts/spec.md) explains what is made from it. The example's specs: "
        "`specs/bike_sharing.yaml` (with history features) and `specs/bike_sharing_rows.yaml` (row features only). "
        "A spec that breaks a rule below is refused when it is loaded, naming the file, the key and what is "
        "allowed.\n\n" + model_tables(DatasetSpec)
    )


def params_page() -> str:
    from tiffin.core.params import Params

    return (
        "`params.yaml` (or the file `TIFFIN_PARAMS` names) holds each pipeline stage's parameters; DVC tracks them "
        "per stage (`dvc params diff`, `dvc exp run -S section.key=value`). It is checked when it is read: "
        "a wrong type or an unknown key is refused, naming the key.\n\n" + model_tables(Params)
    )


def cli_page() -> str:
    return (
        "Every command and option, as `tiffin --help` prints them. Exit codes: [exit codes](exit-codes.md); "
        "environment variables that stand in for options: [settings](settings.md).\n\n"
        "::: mkdocs-click\n    :module: tiffin.cli.main\n    :command: main\n    :prog_name: tiffin\n"
        "    :depth: 1\n    :style: plain\n    :list_subcommands: true\n"
    )


def settings_page() -> str:
    from tiffin.storage.settings import ENVIRONMENT

    rows = [
        f"| `{v.name}` | {f'`{v.default}`' if v.default is not None else 'unset'} | {v.read_by} | {_cell(v.meaning)} |"
        for v in ENVIRONMENT
    ]
    return (
        "The environment variables Tiffin reads, from the one table the code reads them through "
        "(`tiffin.storage.settings.ENVIRONMENT`). An empty value counts as unset. A command-line option, "
        "where there is one, wins over the variable.\n\n"
        "| variable | default | read by | meaning |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    )


def exit_codes_page() -> str:
    from tiffin.cli.exits import EXIT_CODES_BY_COMMAND

    out = [
        "What a scheduler, a CI job or a shell script can read from each command's exit code (`--help` "
        "shows the same).",
        "",
        "| command | code | meaning |",
        "|---|---|---|",
    ]
    for command, codes in EXIT_CODES_BY_COMMAND.items():
        out += [f"| `{command}` | {code} | {_cell(meaning)} |" for code, meaning in sorted(codes.items())]
    return "\n".join(out) + "\n"


def http_page() -> str:
    from tiffin.core.spec import load_spec
    from tiffin.serving import openapi
    from tiffin.serving.asgi import MOUNTED
    from tiffin.storage.settings import load_params

    spec = load_spec(ROOT / load_params(ROOT / "params.yaml")["spec"])
    statuses = {
        "200": "The predictions, in the order of `rows`, and the model that made them",
        **openapi.ERROR_RESPONSES,
    }
    undescribed = (set(openapi.OPEN_PATHS) - set(_OPEN_PATHS)) | (set(MOUNTED) - set(_MOUNTED))
    if undescribed:
        raise ValueError(f"docs/hooks/reference.py: describe the paths {sorted(undescribed)} in _OPEN_PATHS/_MOUNTED")
    request = {"rows": [openapi.example_record(spec)]}
    out = [
        "A running service documents itself: `GET /` (Swagger UI) and `GET /docs.json` (OpenAPI 3) describe the "
        "request of the model it serves, built from that model's spec. This page is made from the same code, "
        f"with the example spec (`{spec.name}`).",
        "",
        "## Paths",
        "",
        "| path | what | token needed |",
        "|---|---|---|",
        "| `POST /predict` | score `rows` with the champion (a challenger scores them in shadow, off the request path) "
        "| when `TIFFIN_API_TOKEN` is set |",
        "| `GET /` | this API's page: the request, the answers and the errors, tried from the browser (Swagger UI) "
        "| when `TIFFIN_API_TOKEN` is set |",
        *[f"| `GET {path}` | {_OPEN_PATHS[path]} | no |" for path in openapi.OPEN_PATHS],
        *[f"| `GET {path}/` | {_MOUNTED[path]} | when `TIFFIN_API_TOKEN` is set |" for path in MOUNTED],
        "",
        "## The request",
        "",
        '`POST /predict` with `Content-Type: application/json` and a body `{"rows": [record, ...]}`; another '
        "top-level key is refused. A record of the example spec:",
        "",
        "```json",
        json.dumps(request, indent=2),
        "```",
        "",
        "The record's fields, as `/docs.json` states them (types, ranges, closed sets, which are required):",
        "",
        "```json",
        json.dumps(openapi.rows_json_schema(spec, max_rows=10_000)["items"], indent=2, default=str),
        "```",
        "",
        "## Status codes",
        "",
        "A request is never answered with a 500 for what it sent.",
        "",
        "| status | when |",
        "|---|---|",
        *[f"| {status} | {_cell(when)} |" for status, when in statuses.items()],
        "",
        "## Error bodies",
        "",
        "Every error answer is a JSON object with `error` (one line saying what is wrong) and `detail` (a list). "
        "For rows that break the contract, `detail` holds one problem per broken field (nothing is predicted; "
        "fix the rows and send them again):",
        "",
        "```json",
        json.dumps(openapi.PROBLEM_SCHEMA, indent=2),
        "```",
        "",
        "For a body that is not of the documented form (not JSON, `rows` missing, another top-level key), "
        "`detail` holds the request parser's (pydantic's) errors, each with `type`, `loc` and `msg`; for the "
        "other statuses it is empty.",
        "",
    ]
    return "\n".join(out)


_OPEN_PATHS = {
    "/livez": "the process is up",
    "/readyz": "the model is loaded and warmed up (503 until then)",
    "/healthz": "as /livez",
    "/metrics": "Prometheus metrics: requests, latency, predictions, rows refused",
    "/docs.json": "the OpenAPI document: the request's fields, error bodies",
    "/schema.json": "BentoML's service schema",
}
_MOUNTED = {
    "/dashboard": "the latest `tiffin monitor` report",
    "/ui": "the web interface: models, batch runs, monitoring",
}


def make_page() -> str:
    """Every target the Makefile declares phony, with its `## target: what it does` line (missing: the build fails)."""
    text = (ROOT / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:(.*?)(?<!\\)$", text, re.M | re.S).group(1).replace("\\\n", " ").split()
    described = dict(re.findall(r"^## ([\w-]+(?: / [\w-]+)*): (.*)$", text, re.M))
    missing = [target for target in phony if target not in described]
    if missing:
        raise ValueError(f"Makefile targets without a `## target: what it does` line: {missing}")
    rows = [f"| `make {target}` | {_cell(described[target])} |" for target in phony]
    variables = re.findall(r"^([A-Z_]+) \?= (.*)$", text, re.M)
    return (
        "The Makefile is how a person or CI runs everything; it needs only `python3` and `pip`.\n\n"
        "| target | what it does |\n|---|---|\n" + "\n".join(rows) + "\n\n"
        "Variables you can set on the command line (`make serve PORT=3001`):\n\n"
        "| variable | default |\n|---|---|\n"
        + "\n".join(f"| `{name}` | `{_cell(default)}` |" for name, default in variables)
        + "\n"
    )


def index_page() -> str:
    links = [f"- [{title}]({uri.removeprefix('reference/')})" for uri, (title, _, _) in PAGES.items() if uri != INDEX]
    return "Made from the code, so what they say is what the code does.\n\n" + "\n".join(links) + "\n"


INDEX = "reference/index.md"
PAGES: dict[str, tuple[str, str, Callable[[], str]]] = {
    INDEX: ("Reference", "the list of reference pages", index_page),
    "reference/spec.md": ("The dataset spec", "`tiffin.core.spec`'s pydantic models", spec_page),
    "reference/params.md": ("Params", "`tiffin.core.params`'s pydantic models", params_page),
    "reference/cli.md": ("The command line", "`tiffin`'s click commands, by mkdocs-click", cli_page),
    "reference/http.md": ("The HTTP API", "`tiffin.serving.openapi` and `tiffin.serving.asgi`", http_page),
    "reference/settings.md": ("Settings", "`tiffin.storage.settings.ENVIRONMENT`", settings_page),
    "reference/exit-codes.md": ("Exit codes", "`tiffin.cli.exits`", exit_codes_page),
    "reference/make.md": ("Make targets", "the Makefile's `##` lines", make_page),
}
