"""``load_model``: the one way to get a trained model from a checkpoint file.

Three layouts are recognized:

* this package's checkpoints (``benco train``): Benco's dict plus ``model_name`` and
  ``model_args``; the frozen CLIP is left out when it came from a pretrained source and is
  then rebuilt from that source (an open_clip tag or file), nothing else is fetched;
* Benco ``save_model`` checkpoints of any registered model (``args.model`` names it, or the
  caller does), built from the given options and loaded strictly;
* checkpoints of the published OpenSDI ``train.py``: Benco's layout holding the whole
  ``MaskCLIP('ViTL')`` state dict, frozen CLIP included, mapped onto the ``paper`` setting
  (``model.published``). Nothing is downloaded.

Pretrained sources that a checkpoint overwrites anyway (MAE/SAM side weights, a CLIP the
file carries) are never loaded. Weights that do not fit are a ``WeightsMismatch`` naming the
missing and unexpected keys and the shapes that differ.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.checkpoints import layout
from imdlbenco_maskclip.common.errors import UserError, WeightsMismatch
from imdlbenco_maskclip.host import models

PACKAGE = "imdlbenco_maskclip"
BENCO = "benco"
PUBLISHED = "published"
SHOWN = 12
"""Keys listed per kind in a ``WeightsMismatch`` message."""


@dataclass
class Checkpoint:
    """A checkpoint file read but not yet built: its layout, the model it names (None when
    it does not say), the options it records, and everything it holds (``saved``: the
    weights without DDP prefix, ``selected_on``, the run's ``args``, ...)."""

    path: str
    layout: str
    model_name: str | None
    model_options: dict[str, Any]
    saved: layout.TrainingState = field(repr=False)


def read_checkpoint(checkpoint: str | Path) -> Checkpoint:
    """Read a checkpoint file and tell its layout (see the module docstring)."""
    from imdlbenco_maskclip.model.published import is_published

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    saved = layout.read(path)
    if is_published(saved.weights):
        return Checkpoint(str(path), PUBLISHED, "MaskCLIP", {"setting": "paper"}, saved)
    kind = PACKAGE if saved.model_name is not None else BENCO
    return Checkpoint(str(path), kind, saved.named_model, dict(saved.model_args), saved)


def model_name_for(checkpoint: Checkpoint, requested: str | None) -> str:
    """The model to build: ``requested`` when given, which must agree with the name the file
    records; else the recorded one, which must exist."""
    if requested and checkpoint.model_name and requested != checkpoint.model_name:
        raise WeightsMismatch(
            f"{checkpoint.path} holds a {checkpoint.model_name}, not a {requested} (leave the model name out to use it)"
        )
    name = requested or checkpoint.model_name
    if not name:
        raise WeightsMismatch(f"{checkpoint.path} does not record which model it holds: name the model (--model NAME)")
    return name


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; a ``WeightsMismatch`` naming ``source`` lists the
    missing and unexpected keys and the shapes that differ."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(state[key].shape)} (the model's: {tuple(value.shape)})"
        for key, value in expected.items()
        if key in state and tuple(state[key].shape) != tuple(value.shape)
    ]
    if missing or unexpected or shapes:
        parts = [
            f"{len(found)} {kind}: {', '.join(found[:SHOWN])}{', ...' if len(found) > SHOWN else ''}"
            for kind, found in (
                ("missing keys", missing),
                ("unexpected keys", unexpected),
                ("shape mismatches", shapes),
            )
            if found
        ]
        raise WeightsMismatch(f"{source}: the weights do not fit {type(model).__name__}: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _is_maskclip(name: str) -> bool:
    from IMDLBenCo.registry import MODELS

    from imdlbenco_maskclip.model import build_maskclip

    return MODELS.has(name) and MODELS.get(name) is build_maskclip


def _network_for(
    checkpoint: Checkpoint, name: str, options: dict[str, Any]
) -> tuple[torch.nn.Module, Mapping[str, torch.Tensor]]:
    """The untrained network a checkpoint's weights go into, and those weights under its names."""
    state = checkpoint.saved.weights
    if not _is_maskclip(name):
        return models.model_class(name)(**options), state
    from imdlbenco_maskclip.model.build import network_for_weights
    from imdlbenco_maskclip.model.published import from_published
    from imdlbenco_maskclip.model.settings import get_setting

    if checkpoint.layout == PUBLISHED:
        if options["setting"] != "paper":
            raise WeightsMismatch(
                f"{checkpoint.path} holds the published OpenSDI MaskCLIP, the paper setting, not {options['setting']}"
            )
        state = from_published(state, get_setting("paper"))
    return network_for_weights(options, carries_clip=any(key.startswith("clip.") for key in state)), state


def build_from_checkpoint(
    checkpoint: Checkpoint, model_name: str | None = None, **model_options: Any
) -> torch.nn.Module:
    """The model a read checkpoint holds, weights loaded strictly, on the CPU, in eval mode.

    ``model_name`` must agree with the name the file records, and is required when it records
    none; ``model_options`` override the recorded options.
    """
    name = model_name_for(checkpoint, model_name)
    options = {**checkpoint.model_options, **model_options}
    model, state = _network_for(checkpoint, name, options)
    load_weights(model, state, checkpoint.path)
    return model.eval()


def load_model(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    **model_options: Any,
) -> torch.nn.Module:
    """The model a checkpoint holds, with its weights, on ``device``, in eval mode.

    Takes this package's checkpoints, Benco ``save_model`` checkpoints of any registered model
    (``model_name`` names it when the file does not) and checkpoints of the published OpenSDI
    ``train.py``. ``model_options`` (the model's own parameters) override the recorded ones.
    Raises ``FileNotFoundError`` for a missing file and ``WeightsMismatch`` (a ``ValueError``)
    for weights that do not fit, naming the missing and unexpected keys.
    """
    model = build_from_checkpoint(read_checkpoint(checkpoint), model_name, **model_options)
    return model.to(torch.device(device))


def for_command(
    checkpoint: str,
    model_name: str | None,
    configured: dict[str, Any],
    extra_flags: Sequence[str],
    image_size: int | None,
) -> tuple[torch.nn.Module, str, layout.TrainingState]:
    """The model a checkpoint holds for a command (options: recorded < config < flags), its
    name and what else the file records (``selected_on``, ``args``, ...), read once; errors
    name ``--checkpoint`` or the option at fault."""
    try:
        stored = read_checkpoint(checkpoint)
    except FileNotFoundError as error:
        raise UserError(f"--checkpoint: {error}") from None
    name = model_name_for(stored, model_name)
    model_args = models.parse_model_args(name, {**stored.model_options, **configured}, extra_flags, image_size)
    try:
        return build_from_checkpoint(stored, name, **model_args), name, stored.saved
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, AssertionError) as error:
        raise models.as_user_error(error, f"--checkpoint {checkpoint}") from None
