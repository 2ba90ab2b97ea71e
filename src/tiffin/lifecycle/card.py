"""The model card: what a registered model predicts, from which data, how well, with which lineage."""

from __future__ import annotations

import json

from tiffin.storage.modelstore import LoadedModel


def model_card(model: LoadedModel) -> str:
    """The card in Markdown (`tiffin models card`, and the release's artefacts)."""
    meta, spec = model.metadata, model.spec
    metrics = meta.get("metrics", {})

    def row(name: str, m: dict) -> str:
        return f"| {name} | {m.get('mae')} | {m.get('rmse')} | {m.get('r2')} | {m.get('rows')} |"

    excluded = ", ".join(f"`{c}`" for c in spec.never_features) or "nothing excluded"
    lines = [
        f"# Model card: {model.tag}", "", spec.description, "",
        f"- Predicts `{spec.target}` from {', '.join(f'`{c}`' for c in spec.features.columns())}",
        f"- Never uses {excluded} (known only afterwards)",
        f"- Source table `{spec.source.table}`, window {meta.get('params', {}).get('ingest', {})}",
        f"- Data snapshot sha256 `{meta.get('data_snapshot_sha256', '?')}`",
        f"- Model sha256 `{meta.get('model_sha256', '?')}`; git commit `{meta.get('git_commit', '?')}`", "",
        "| test period | MAE | RMSE | R² | rows |", "|---|---|---|---|---|",
        row("model", metrics.get("test", {})), row("naive baseline", metrics.get("baseline", {}).get("test", {})),
        "", f"Validation: {json.dumps(meta.get('validation', {}))}", "",
        f"Hyper-parameters: `{json.dumps(meta.get('params', {}).get('train', {}))}`",
    ]  # fmt: skip
    return "\n".join(lines)
