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
file carries) are never loaded. Missing or unexpected keys are an error naming them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip import checkpoints

PACKAGE = "imdlbenco_maskclip"
BENCO = "benco"
PUBLISHED = "published"


@dataclass
class Checkpoint:
    """A checkpoint file read but not yet built: its layout, the model it names (None when
    it does not say), the options it records, and everything it holds (``saved``: the
    weights without DDP prefix, ``selected_on``, the run's ``args``, ...)."""

    path: str
    layout: str
    model_name: str | None
    model_options: dict[str, Any]
    saved: checkpoints.TrainingState = field(repr=False)


def read_checkpoint(checkpoint: str | Path) -> Checkpoint:
    """Read a checkpoint file and tell its layout (see the module docstring)."""
    from imdlbenco_maskclip.model.published import is_published

    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    saved = checkpoints.read(path)
    if is_published(saved.weights):
        return Checkpoint(str(path), PUBLISHED, "MaskCLIP", {"setting": "paper"}, saved)
    layout = PACKAGE if saved.model_name is not None else BENCO
    return Checkpoint(str(path), layout, saved.named_model, dict(saved.model_args), saved)


def _is_maskclip(name: str) -> bool:
    from IMDLBenCo.registry import MODELS

    from imdlbenco_maskclip.model import build_maskclip

    return MODELS.has(name) and MODELS.get(name) is build_maskclip


def _build_maskclip_for(checkpoint: Checkpoint, options: dict[str, Any]) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The MaskCLIP network for a checkpoint and the state dict to load into it: the CLIP
    comes from the file when it carries one, else from the recorded (or given) source; the
    side network is never initialized from MAE or SAM."""
    from imdlbenco_maskclip.model.build import DEFAULT, _resolve
    from imdlbenco_maskclip.model.maskclip import NO_SOURCE, MaskCLIP
    from imdlbenco_maskclip.model.published import from_published
    from imdlbenco_maskclip.model.settings import get_setting
    from imdlbenco_maskclip.model.weights import create_clip

    settings = get_setting(options.get("setting", "paper"))
    state = checkpoint.saved.weights
    if checkpoint.layout == PUBLISHED:
        if options["setting"] != "paper":
            raise ValueError(f"{checkpoint.path} holds the published OpenSDI MaskCLIP, the paper setting, not {options['setting']}")
        state = from_published(state, settings)
    clip, source = None, NO_SOURCE
    if not any(key.startswith("clip.") for key in state):
        source = _resolve(options.get("clip_pretrained", DEFAULT), settings.clip.pretrained)
        if source != NO_SOURCE:
            clip, source = create_clip(settings.clip, source)
    model = MaskCLIP(
        settings, edge_lambda=float(options.get("edge_lambda", 20.0)),
        grad_checkpointing=bool(options.get("grad_checkpointing", False)), clip=clip,
    )
    model.clip_source = source
    return model, state


def build_from_checkpoint(checkpoint: Checkpoint, model_name: str | None = None, **model_options: Any) -> torch.nn.Module:
    """The model a read checkpoint holds, weights loaded strictly, on the CPU, in eval mode.

    ``model_name`` must agree with the name the file records, and is required when it records
    none; ``model_options`` override the recorded options.
    """
    from imdlbenco_maskclip.model_builder import model_class

    if model_name and checkpoint.model_name and model_name != checkpoint.model_name:
        raise ValueError(f"{checkpoint.path} holds a {checkpoint.model_name}, not a {model_name}")
    name = model_name or checkpoint.model_name
    if not name:
        raise ValueError(f"{checkpoint.path} does not record which model it holds: pass the model name")
    options = {**checkpoint.model_options, **model_options}
    if _is_maskclip(name):
        model, state = _build_maskclip_for(checkpoint, options)
    else:
        model, state = model_class(name)(**options), checkpoint.saved.weights
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise ValueError(f"{checkpoint.path}: the weights do not fit {name} built with {options}: {error}") from None
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
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for weights that do not
    fit, naming the missing and unexpected keys.
    """
    model = build_from_checkpoint(read_checkpoint(checkpoint), model_name, **model_options)
    return model.to(torch.device(device))
