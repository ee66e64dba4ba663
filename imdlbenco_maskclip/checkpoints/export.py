"""``benco weights export``: a checkpoint as a weight folder (``folder``) to upload as it is.

The folder holds the model's weights only, under the model's own names (a published file's
are mapped as loading maps them), checked to fit the model before anything is written, and the
config that rebuilds and feeds the network. A frozen CLIP the checkpoint left out stays out and
its source is recorded, as in this package's checkpoints. One the file carries (as the released
files do) is kept unless ``without_clip``: then the setting's pretrained source is recorded
instead; when that source is at hand (a file, or weights huggingface_hub's cache already holds),
the file's CLIP must equal it bit for bit, else the export is refused.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from imdlbenco_maskclip.checkpoints import inspection, layout, loading
from imdlbenco_maskclip.common.errors import UserError, WeightsMismatch
from imdlbenco_maskclip.host.version import installed_version


@dataclass
class Export:
    """What a weight folder will hold: ``weights`` (the model's, under its names) and
    ``config`` (``config.json`` without the format fields)."""

    weights: dict[str, torch.Tensor]
    config: dict[str, Any]


def training_data(run_args: Mapping[str, Any]) -> str | None:
    """The training data a run's ``args`` name (``data_path``, with its generators), or None."""
    data = run_args.get("data_path")
    if not data:
        return None
    generators = run_args.get("generators")
    return f"{data} ({', '.join(map(str, generators))})" if isinstance(generators, (list, tuple)) else str(data)


def _without_clip(
    stored: loading.Checkpoint, weights: dict[str, torch.Tensor], options: dict[str, Any], pretrained: str | None
) -> dict[str, Any]:
    """Drop the frozen CLIP from ``weights`` (after checking it against its source when that is
    at hand) and record the source in ``options``; returns the config's ``clip`` entry."""
    from imdlbenco_maskclip.model.build import DEFAULT, resolve_source
    from imdlbenco_maskclip.model.maskclip import NO_SOURCE
    from imdlbenco_maskclip.model.settings import get_setting
    from imdlbenco_maskclip.model.weights import cached_clip_file, create_clip

    settings = get_setting(str(options.get("setting", "paper")))
    source = resolve_source(pretrained or options.get("clip_pretrained", DEFAULT), settings.clip.pretrained)
    if source == NO_SOURCE:
        raise UserError(
            f"--without-clip: the {options.get('setting', 'paper')} setting has no pretrained CLIP to rebuild it from, "
            "so its CLIP weights must stay in the folder (or pass --clip_pretrained FILE, the CLIP they came from)"
        )
    at_hand = cached_clip_file(settings.clip, source)
    if at_hand is not None and os.path.isfile(os.path.expanduser(source)):
        source = at_hand = os.path.abspath(at_hand)  # a file is recorded where it is, from any folder
    if at_hand is not None:
        reference, _ = create_clip(settings.clip, at_hand)
        theirs = {f"clip.model.{key}": value for key, value in reference.state_dict().items()}
        ours = {key: value for key, value in weights.items() if key.startswith("clip.")}
        differ = sorted(
            key
            for key in theirs.keys() | ours.keys()
            if key not in theirs or key not in ours or not torch.equal(theirs[key], ours[key])
        )
        if differ:
            raise UserError(
                f"--without-clip: the frozen CLIP in {stored.path} is not the CLIP of {source} ({at_hand}): "
                f"{len(differ)} tensors differ, e.g. {', '.join(differ[:5])}; leaving it out would change the model, "
                "so the folder keeps it (drop --without-clip)"
            )
    for key in [key for key in weights if key.startswith("clip.")]:
        del weights[key]
    options["clip_pretrained"] = source
    return {"in_file": False, "source": source, "left_out": "export", "verified_against": at_hand}


def prepare(
    checkpoint: str, without_clip: bool = False, clip_pretrained: str | None = None, model_name: str | None = None
) -> Export:
    """The weights and config of the weight folder for ``checkpoint`` (a file, folder or hub
    reference); weights that do not fit the model are a ``WeightsMismatch`` and nothing is
    written."""
    stored = loading.read_checkpoint(checkpoint)
    saved = stored.saved
    name = loading.model_name_for(stored, model_name)
    options = dict(stored.model_options)
    shapes, state = loading.expected_shapes(stored, name, options)
    problems = loading.mismatches(shapes, state)
    if problems:
        raise WeightsMismatch(f"{stored.path}: the weights do not fit {name}: {'; '.join(problems)}")
    from imdlbenco_maskclip.model.build import holds_clip

    weights = dict(state)
    clip: dict[str, Any] | None = None
    if name == "MaskCLIP":
        carried = holds_clip(weights)
        if without_clip and carried:
            clip = _without_clip(stored, weights, options, clip_pretrained)
        elif carried:
            clip = {"in_file": True}
        else:
            clip = {"in_file": False, "source": options.get("clip_pretrained", "default"), "left_out": "checkpoint"}
    elif without_clip:
        raise UserError(f"--without-clip: {name} has no frozen CLIP; it applies to MaskCLIP only")
    source = {**stored.source, "sha256": inspection.checkpoint_sha256(stored)}
    image_size, padding = saved.input_handling(None, None)
    config = {
        "model": name,
        "model_args": layout.plain(options),
        "image_size": image_size,
        "if_padding": padding,
        "precision": saved.precision,
        "weights_dtype": inspection.dtype_names(weights.values()),
        "selected_on": saved.selected_on,
        "selection_data": saved.selection_data,
        "val_threshold": saved.val_threshold,
        "training_data": training_data(saved.run_args),
        "epoch": saved.epoch,
        **({"clip": clip} if clip is not None else {}),
        "exported_from": {**source, "layout": stored.layout},
        "versions": {
            "imdlbenco-maskclip": installed_version("imdlbenco-maskclip"),
            "imdlbenco": installed_version("imdlbenco"),
            "torch": torch.__version__,
        },
    }
    return Export(weights, config)
