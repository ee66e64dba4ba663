"""The model card of a weight folder (its ``README.md``, ``benco weights export``).

A metadata block the hub reads (library name, tags with the paper's arXiv id, the training
dataset), what the folder holds and how it was made (from its ``config.json``), how to use it,
and, given a ``benco test`` result (``opensdi_results.json``), the protocol table and what the
checkpoint was selected on.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from imdlbenco_maskclip.evaluation import comparison, tables

ARXIV = "2503.19653"
LIBRARY = "imdlbenco-maskclip"
TAGS = ("image-forensics", "image-manipulation-localization", "ai-generated-image-detection", "opensdi", "imdlbenco")
TRAINING_SET = "nebula/OpenSDI_train"


def _metadata(config: Mapping[str, Any]) -> str:
    trained_on = str(config.get("training_data") or "")
    published = (config.get("exported_from") or {}).get("layout") == "published"
    lines = ["---", f"library_name: {LIBRARY}", "tags:", *(f"- {tag}" for tag in TAGS), f"- arxiv:{ARXIV}"]
    if published or "opensdi_train" in trained_on.lower():
        lines += ["datasets:", f"- {TRAINING_SET}"]
    return "\n".join([*lines, "---"])


def _clip_text(clip: Mapping[str, Any]) -> str:
    if clip.get("in_file"):
        return "in `model.safetensors` (frozen, as trained)"
    rebuilt = f"rebuilt at load from its pretrained source `{clip.get('source')}` (open_clip)"
    if clip.get("left_out") != "export":
        return f"left out by the training run; {rebuilt}"
    checked = clip.get("verified_against")
    how = (
        f"the checkpoint's CLIP was checked bit for bit against `{checked}`"
        if checked
        else "not checked against the checkpoint's CLIP: the source was not at hand at export"
    )
    return f"left out by `--without-clip`; {rebuilt}; {how}"


def _results(path: Path) -> str:
    source = comparison.results_file(path)
    run = comparison.load_run(source)
    payload = json.loads(source.read_text(encoding="utf-8"))
    table = tables.columns()
    rows = [[row.get(key) for key, _ in table] for row in [*payload["splits"], payload.get("mean") or {}] if row]
    selected = run.selected_on or "not recorded in the checkpoint"
    return (
        f"## Results on the OpenSDI protocol\n\n`benco test` of these weights ({source.name}): "
        "pixel metrics over the partial fakes, image metrics over all images, both at 0.5.\n\n"
        f"{tables.markdown_table([title for _, title in table], rows)}\n\n"
        f"Selected on: {selected}. A split the checkpoint was selected on is not a held-out result."
    )


def model_card(config: Mapping[str, Any], weights_summary: str, results: Path | None = None) -> str:
    """The card's Markdown for a weight folder whose ``config.json`` is ``config``;
    ``weights_summary`` says what ``model.safetensors`` holds; ``results`` adds the table."""
    source = config.get("exported_from") or {}
    options = ", ".join(f"{k}={v}" for k, v in sorted((config.get("model_args") or {}).items())) or "-"
    threshold = config.get("val_threshold")
    facts = {
        "model": f"`{config['model']}` ({options})",
        "input": f"{config.get('image_size')} px, {'zero-padded' if config.get('if_padding') else 'resized'}",
        "weights": f"`model.safetensors`: {weights_summary}; no optimizer or scaler state",
        **({"frozen CLIP": _clip_text(config["clip"])} if config.get("clip") else {}),
        "trained on": config.get("training_data") or "not recorded",
        "precision": config.get("precision") or "not recorded",
        "epoch": config.get("epoch") if config.get("epoch") is not None else "not recorded",
        "selected on": config.get("selected_on") or "not recorded",
        **({"threshold": f"{threshold:g} (chosen on held-out validation)"} if threshold is not None else {}),
        "exported from": f"`{source.get('checkpoint')}` ({source.get('layout')}"
        + (f", revision {source['revision']}" if source.get("revision") else "")
        + (f", sha256 {source['sha256']}" if source.get("sha256") else "")
        + ")",
        "versions": ", ".join(f"{k} {v}" for k, v in (config.get("versions") or {}).items() if v),
    }
    body = tables.markdown_table(["", ""], [[f"**{k}**", v] for k, v in facts.items()])
    use = (
        "## Use\n\n```bash\npip install imdlbenco-maskclip\n"
        "benco predict --checkpoint hf://OWNER/REPO photos/ --output_dir predictions\n"
        "benco test --config opensdi_test --checkpoint hf://OWNER/REPO --test_data_path nebula/OpenSDI_test\n```\n\n"
        "```python\nfrom imdlbenco_maskclip import Predictor\n\n"
        'predictor = Predictor.from_checkpoint("hf://OWNER/REPO")\n'
        'print(predictor.predict("photo.jpg").fake_probability)\n```\n\n'
        "Replace `hf://OWNER/REPO` with this repository (`hf://OWNER/REPO/FOLDER/` for a subfolder) "
        "or the folder's local path."
    )
    parts = [
        _metadata(config),
        f"# {config['model']} weights for image forensics (OpenSDI)",
        f"Exported with `benco weights export` ({LIBRARY}). The model localizes and detects images made or "
        "edited by diffusion models.",
        body,
        use,
    ]
    if results is not None:
        parts.append(_results(results))
    parts.append(
        "## Source\n\nOpenSDI: Spotting Diffusion-Generated Images in the Open World (CVPR 2025), "
        f"[arXiv:{ARXIV}](https://arxiv.org/abs/{ARXIV}). The checkpoint this folder was exported from states "
        "no licence here; check the terms of the weights before sharing them."
    )
    return "\n\n".join(parts) + "\n"
