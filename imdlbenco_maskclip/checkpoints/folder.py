"""Weight folders: a trained model as a person uploads it to the hub, read and written here.

* ``model.safetensors``: the model's weights under its own names, nothing else (no optimizer,
  no scaler); every tensor stored as its own, even where the checkpoint's shared a storage.
* ``config.json``: how to rebuild the network and feed it: ``model`` and ``model_args``,
  ``image_size``, ``if_padding``, ``precision``, ``selected_on`` and ``selection_data`` (what
  ``benco test`` warns about), ``val_threshold`` (the default threshold of ``Predictor``,
  ``benco predict`` and ``serve``), ``training_data``, ``clip`` (whether the file holds the
  frozen CLIP, else where it comes from), where it was exported from and the versions that
  wrote it.
* ``README.md``: the model card (its text comes from ``evaluation.model_card``).

``config.json`` is written last, so a folder an interrupted export left is not taken for a
weight folder. Reading memory-maps ``model.safetensors`` and copies the tensors that do not lie
on a 64-byte boundary (``_aligned``), so the folder computes its checkpoint's outputs bit for bit.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.checkpoints.hub import FOLDER_FILES
from imdlbenco_maskclip.checkpoints.layout import TrainingState
from imdlbenco_maskclip.common.atomic import atomic_path, write_text
from imdlbenco_maskclip.common.errors import UserError

WEIGHTS, CONFIG, CARD = FOLDER_FILES
FORMAT = "imdlbenco-maskclip weights"
FORMAT_VERSION = 1
ALIGNMENT = 64


def is_weight_folder(path: Path) -> bool:
    """Whether ``path`` is a folder holding ``model.safetensors`` and ``config.json``."""
    return (path / WEIGHTS).is_file() and (path / CONFIG).is_file()


def read_config(path: Path) -> dict[str, Any]:
    """A weight folder's ``config.json``; a folder that is not one, or a config without the
    model's name, is a ``UserError`` naming the file."""
    if not is_weight_folder(path):
        raise UserError(
            f"--checkpoint: {path} is a folder without {WEIGHTS} and {CONFIG}, so not a weight folder "
            "(benco weights export writes one); pass a checkpoint file or such a folder"
        )
    try:
        config = json.loads((path / CONFIG).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise UserError(f"--checkpoint: cannot read {path / CONFIG}: {error}") from None
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        raise UserError(f"--checkpoint: {path / CONFIG} does not name the model (key 'model')")
    if not isinstance(config.get("model_args", {}), dict):
        raise UserError(f"--checkpoint: {path / CONFIG}: key 'model_args' must be a mapping of option to value")
    return config


def read(path: Path) -> TrainingState:
    """A weight folder as a checkpoint's ``TrainingState``: its weights (memory-mapped), model,
    options, test-time size and padding (as ``run_args``), epoch, precision, what it was
    selected on and its ``val_threshold``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    config = read_config(path)
    try:
        weights = load_file(path / WEIGHTS)
    except (OSError, SafetensorError) as error:
        raise UserError(f"--checkpoint: cannot read {path / WEIGHTS}: {error}") from None
    run_args = {key: config[key] for key in ("image_size", "if_padding") if config.get(key) is not None}
    return TrainingState(
        weights={key: _aligned(value) for key, value in weights.items()},
        model_name=config["model"],
        model_args=dict(config.get("model_args") or {}),
        run_args=run_args,
        epoch=config.get("epoch"),
        precision=config.get("precision"),
        selected_on=config.get("selected_on"),
        selection_data=config.get("selection_data"),
        val_threshold=config.get("val_threshold"),
    )


def _aligned(value: torch.Tensor) -> torch.Tensor:
    """``value`` at an address that is a multiple of ``ALIGNMENT``: kept memory-mapped when it
    is, copied when it is not. safetensors places tensors at 8-byte boundaries, and CPU kernels
    (MKL's among them) may add in another order for weights that are not 64-byte aligned, so a
    folder would compute its checkpoint's outputs only to rounding (torch's files align to 64)."""
    return value if value.data_ptr() % ALIGNMENT == 0 else value.clone()


def own_tensors(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``weights`` with every tensor contiguous and holding its own storage: a view that shares
    its storage with another tensor (k and v cut from one projection) is copied, others are
    kept as they are (safetensors stores neither shared nor strided tensors)."""
    seen: dict[tuple[Any, ...], int] = {}
    for value in weights.values():
        key = (value.device, value.untyped_storage().data_ptr())
        seen[key] = seen.get(key, 0) + 1
    result = {}
    for name, value in weights.items():
        shared = seen[(value.device, value.untyped_storage().data_ptr())] > 1
        whole = value.storage_offset() == 0 and value.untyped_storage().nbytes() == value.nbytes
        result[name] = value.clone(memory_format=torch.contiguous_format) if shared or not whole else value.contiguous()
    return result


def write(path: Path, weights: Mapping[str, torch.Tensor], config: Mapping[str, Any], card: str) -> list[Path]:
    """Write a weight folder at ``path``: the weights, the model card, then ``config.json``
    (each file atomically); returns the paths written."""
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    with atomic_path(path / WEIGHTS) as temporary:
        save_file(own_tensors(weights), str(temporary), metadata={"format": "pt"})
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # safetensors writes 0600; the folder is meant to be shared
    write_text(path / CARD, card)
    write_text(
        path / CONFIG, json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **config}, indent=2) + "\n"
    )
    return [path / WEIGHTS, path / CARD, path / CONFIG]
