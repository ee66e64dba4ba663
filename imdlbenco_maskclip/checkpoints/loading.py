"""``load_model``: the one way to get a trained model from a checkpoint.

A checkpoint is a local path or a hub reference (``hub``: ``hf://OWNER/REPO/FILE``, or a weight
folder ``hf://OWNER/REPO[/FOLDER/]``). Four layouts are recognized:

* this package's checkpoints (``benco train``): Benco's dict plus ``model_name`` and
  ``model_args``; the frozen CLIP is left out when it came from a pretrained source and is
  then rebuilt from that source (an open_clip tag or file), nothing else is fetched;
* Benco ``save_model`` checkpoints of any registered model: ``args.model`` names it (or the
  caller does) and it is built from the ``args`` entries that match its parameters, as Benco's
  ``test.py`` builds it;
* checkpoints of the published OpenSDI ``train.py``: Benco's layout holding the whole
  ``MaskCLIP('ViTL')`` state dict, frozen CLIP included, mapped onto the setting it fits
  (``paper`` for the released files; ``model.published``);
* weight folders (``folder``, written by ``benco weights export``).

MaskCLIP is built on the meta device and receives the file's tensors themselves
(``load_state_dict(assign=True)``); the file is memory-mapped (``layout.read``), so the
weights are held once, as the file's pages, and an optimizer the file also holds is never
read. The buffers a state dict does not hold are then computed (``MaskCLIP.rebuild_buffers``).
Other models are built as their class builds them, with the options naming a pretrained file
to load at construction cleared (IML_ViT's ``vit_pretrain_path``, ...: the weights replace what
they would load), and the weights copied in. Weights that do not fit are a ``WeightsMismatch``
naming the missing and unexpected keys and the shapes that differ.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import torch

from imdlbenco_maskclip.checkpoints import folder, hub, layout
from imdlbenco_maskclip.common.errors import UserError, WeightsMismatch
from imdlbenco_maskclip.host import models

PACKAGE = "imdlbenco_maskclip"
BENCO = "benco"
PUBLISHED = "published"
FOLDER = "folder"
LAYOUTS = {
    PACKAGE: "this package's checkpoint (benco train)",
    BENCO: "Benco save_model checkpoint",
    PUBLISHED: "published OpenSDI checkpoint (MaskCLIP train.py)",
    FOLDER: "weight folder (benco weights export)",
}
PUBLISHED_SELECTION = (
    "test: nebula/OpenSDI_test sd15 (the published train.py keeps the epoch that scores best on its test data)"
)
"""What a published file was selected on; its file does not say, the published code does."""
SHOWN = 12
"""Keys listed per kind in a ``WeightsMismatch`` message."""


@dataclass
class Checkpoint:
    """A checkpoint read but not yet built: its layout, the model it names (None when it does
    not say), the options to build it with, and everything it holds (``saved``: the weights
    without DDP prefix, ``selected_on``, the run's ``args``, ...). ``path`` is the checkpoint as
    given (a path or a hub reference); ``located`` says where it lies here."""

    path: str
    layout: str
    model_name: str | None
    model_options: dict[str, Any]
    saved: layout.TrainingState = field(repr=False)
    located: hub.Located | None = None

    @property
    def source(self) -> dict[str, Any]:
        """Where the weights came from, as results and predictions record it
        (``hub.Located.record``)."""
        return self.located.record() if self.located else {"checkpoint": self.path}


def read_checkpoint(checkpoint: str | Path) -> Checkpoint:
    """Find (a hub reference: download) and read a checkpoint, and tell its layout (see the
    module docstring). Raises ``FileNotFoundError`` when there is none at a local path."""
    from imdlbenco_maskclip.model.published import is_published, published_setting

    located = hub.locate(checkpoint)
    given, path = located.given, located.path
    if path.is_dir():
        saved = folder.read(path)
        return Checkpoint(given, FOLDER, saved.model_name, dict(saved.model_args), saved, located)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint file {path}")
    saved = layout.read(path)
    if is_published(saved.weights):
        if saved.selected_on is None:
            saved.selected_on, saved.selection_data = (
                PUBLISHED_SELECTION,
                {"data_path": "nebula/OpenSDI_test", "rows": ["sd15"]},
            )
        return Checkpoint(given, PUBLISHED, "MaskCLIP", {"setting": published_setting(saved.weights)}, saved, located)
    if saved.model_name is not None:
        return Checkpoint(given, PACKAGE, saved.model_name, dict(saved.model_args), saved, located)
    return Checkpoint(given, BENCO, saved.named_model, _options_from_run(saved), saved, located)


def _options_from_run(saved: layout.TrainingState) -> dict[str, Any]:
    """A Benco run's ``args`` as options of the registered model it names, as Benco's
    ``test.py`` combines them: the entries that match the model's parameters (not ``device``,
    which is where this process runs) and a size option taking the run's ``image_size``. Empty
    when the model is not registered."""
    from IMDLBenCo.registry import MODELS

    name = saved.named_model
    if not name or not MODELS.has(name):
        return {}
    params = models.init_parameters(models.model_class(name))
    options = {key: value for key, value in saved.run_args.items() if key in params and key != "device"}
    return models.with_size_options(params, options, saved.image_size)


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


def mismatches(expected: Mapping[str, Sequence[int]], state: Mapping[str, torch.Tensor]) -> list[str]:
    """How ``state`` differs from a network's tensor shapes (``expected``): one entry per kind
    (missing keys, unexpected keys, shape mismatches), each with its first ``SHOWN`` keys."""
    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    shapes = [
        f"{key} {tuple(state[key].shape)} (the model's: {tuple(shape)})"
        for key, shape in expected.items()
        if key in state and tuple(state[key].shape) != tuple(shape)
    ]
    return [
        f"{len(found)} {kind}: {', '.join(found[:SHOWN])}{', ...' if len(found) > SHOWN else ''}"
        for kind, found in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes))
        if found
    ]


def load_weights(model: torch.nn.Module, state: Mapping[str, torch.Tensor], source: str) -> None:
    """Load ``state`` into ``model`` strictly; a ``WeightsMismatch`` naming ``source`` lists the
    missing and unexpected keys and the shapes that differ.

    A model built on the meta device receives the tensors themselves (cast only where the
    dtype differs), then computes the buffers its state dict does not hold
    (``rebuild_buffers``); any other model gets the values copied into its own tensors.
    """
    expected = model.state_dict()
    problems = mismatches({key: value.shape for key, value in expected.items()}, state)
    if problems:
        raise WeightsMismatch(f"{source}: the weights do not fit {type(model).__name__}: {'; '.join(problems)}")
    if not any(value.is_meta for value in expected.values()):
        model.load_state_dict(state, strict=True)
        return
    typed = {
        key: value if value.dtype == expected[key].dtype else value.to(expected[key].dtype)
        for key, value in state.items()
    }
    model.load_state_dict(typed, strict=True, assign=True)
    rebuild = getattr(model, "rebuild_buffers", None)
    if rebuild is not None:
        rebuild()
    left = [name for name, value in itertools.chain(model.named_parameters(), model.named_buffers()) if value.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__}: {', '.join(left[:SHOWN])} left on the meta device after loading")


def _is_maskclip(name: str) -> bool:
    from IMDLBenCo.registry import MODELS

    from imdlbenco_maskclip.model import build_maskclip

    return MODELS.has(name) and MODELS.get(name) is build_maskclip


def expected_shapes(
    checkpoint: Checkpoint, name: str, options: dict[str, Any]
) -> tuple[dict[str, tuple[int, ...]], Mapping[str, torch.Tensor]]:
    """The tensor shapes the network of ``name`` with ``options`` takes from a checkpoint, and
    the checkpoint's weights under that network's names, without building a MaskCLIP (its
    shapes come from the meta device): what ``WeightsMismatch`` would list, asked beforehand."""
    if not _is_maskclip(name):
        model = models.build_model(name, models.without_pretrained_files(name, options))
        return {key: tuple(value.shape) for key, value in model.state_dict().items()}, checkpoint.saved.weights
    from imdlbenco_maskclip.model.build import DEFAULT, holds_clip, resolve_source
    from imdlbenco_maskclip.model.maskclip import NO_SOURCE
    from imdlbenco_maskclip.model.published import network_shapes
    from imdlbenco_maskclip.model.settings import get_setting

    setting = str(options.get("setting", "paper"))
    settings = get_setting(setting)
    state = _maskclip_weights(checkpoint, settings)
    shapes = network_shapes(setting)
    rebuilt = resolve_source(options.get("clip_pretrained", DEFAULT), settings.clip.pretrained) != NO_SOURCE
    if rebuilt and not holds_clip(state):
        shapes = {key: shape for key, shape in shapes.items() if not key.startswith("clip.")}
    return shapes, state


def network_and_weights(
    checkpoint: Checkpoint, name: str, options: dict[str, Any]
) -> tuple[torch.nn.Module, Mapping[str, torch.Tensor]]:
    """The untrained network a checkpoint's weights go into and those weights under its names:
    MaskCLIP on the meta device (a CLIP the weights leave out rebuilt from its source); another
    model as its class builds it, with the options naming a pretrained file to load at
    construction cleared, since the weights replace what they would load."""
    if not _is_maskclip(name):
        network = models.model_class(name)(**models.without_pretrained_files(name, options))
        return network, checkpoint.saved.weights
    from imdlbenco_maskclip.model.build import holds_clip, network_for_weights
    from imdlbenco_maskclip.model.settings import get_setting

    state = _maskclip_weights(checkpoint, get_setting(str(options.get("setting", "paper"))))
    return network_for_weights(options, carries_clip=holds_clip(state)), state


def _maskclip_weights(checkpoint: Checkpoint, settings: Any) -> Mapping[str, torch.Tensor]:
    """A MaskCLIP checkpoint's weights under MaskCLIP's names (a published file's mapped for
    ``settings``)."""
    from imdlbenco_maskclip.model.published import from_published

    if checkpoint.layout != PUBLISHED:
        return checkpoint.saved.weights
    return from_published(checkpoint.saved.weights, settings)


def build_from_checkpoint(
    checkpoint: Checkpoint, model_name: str | None = None, **model_options: Any
) -> torch.nn.Module:
    """The model a read checkpoint holds, weights loaded strictly, on the CPU, in eval mode.

    ``model_name`` must agree with the name the file records, and is required when it records
    none; ``model_options`` override the recorded options.
    """
    name = model_name_for(checkpoint, model_name)
    options = {**checkpoint.model_options, **model_options}
    model, state = network_and_weights(checkpoint, name, options)
    load_weights(model, state, checkpoint.path)
    return model.eval()


def load_model(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    **model_options: Any,
) -> torch.nn.Module:
    """The model a checkpoint holds, with its weights, on ``device``, in eval mode.

    ``checkpoint`` is a file or weight folder, local or on the hub (``hf://OWNER/REPO/FILE``,
    ``hf://OWNER/REPO[/FOLDER/]``). Takes this package's checkpoints, Benco ``save_model``
    checkpoints of any registered model (``model_name`` names it when the file does not),
    checkpoints of the published OpenSDI ``train.py`` and weight folders. ``model_options``
    (the model's own parameters) override the recorded ones. Raises ``FileNotFoundError`` for
    a missing file, ``UserError`` for a hub reference that cannot be had and
    ``WeightsMismatch`` (a ``ValueError``) for weights that do not fit, naming the missing and
    unexpected keys.
    """
    model = build_from_checkpoint(read_checkpoint(checkpoint), model_name, **model_options)
    return model.to(torch.device(device))


class Loaded(NamedTuple):
    """What ``for_command`` gives a command: the model, its registered name, what the file
    records, where it came from (``Checkpoint.source``), and the image size and padding to
    feed it at."""

    model: torch.nn.Module
    name: str
    recorded: layout.TrainingState
    source: dict[str, Any]
    image_size: int
    padding: bool


def for_command(
    checkpoint: str,
    model_name: str | None,
    configured: dict[str, Any],
    extra_flags: Sequence[str],
    image_size: int | None,
    padding: bool | None = None,
) -> Loaded:
    """The model a checkpoint holds for a command (options: recorded < config < flags) and the
    image size and padding to test it at (given < the checkpoint's run < 512, resizing), read
    once; errors name ``--checkpoint`` or the option at fault."""
    try:
        stored = read_checkpoint(checkpoint)
    except FileNotFoundError as error:
        raise UserError(f"--checkpoint: {error}") from None
    name = model_name_for(stored, model_name)
    size, pad = stored.saved.input_handling(image_size, padding)
    model_args = models.parse_model_args(name, {**stored.model_options, **configured}, extra_flags, size)
    try:
        model = build_from_checkpoint(stored, name, **model_args)
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, AssertionError) as error:
        raise models.as_user_error(error, f"--checkpoint {checkpoint}") from None
    return Loaded(model, name, stored.saved, stored.source, size, pad)
