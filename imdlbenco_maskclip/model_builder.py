"""Build any model in Benco's ``MODELS`` registry from its name and its own options.

Model options are the model's ``__init__`` parameters, parsed as flags by
``compat.model_argparser`` (Benco's ``create_argparser`` with its type faults fixed). They come
from the run config's ``model_args``, then from flags left over after the command's own.
"""

from __future__ import annotations

import argparse
import inspect
from typing import TYPE_CHECKING, Any, Sequence

import torch

from imdlbenco_maskclip.errors import UserError

if TYPE_CHECKING:
    from imdlbenco_maskclip.checkpoints import TrainingState

# Model options that must equal the run's image size (Benco's models name it either way).
SIZE_OPTIONS = ("input_size", "img_size")


def model_class(name: str) -> Any:
    """The registered class (or factory) called ``name``; the error suggests close names."""
    import difflib

    import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP and OpenSDIDataset)
    from IMDLBenCo.registry import MODELS

    if MODELS.has(name):
        return MODELS.module_dict[name]
    close = difflib.get_close_matches(name, MODELS.module_dict.keys(), n=3, cutoff=0.3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(f"--model: '{name}' is not a registered model.{hint} Registered: {', '.join(sorted(MODELS.module_dict))}")


def init_parameters(cls: Any) -> dict[str, inspect.Parameter]:
    target = cls if inspect.isfunction(cls) or inspect.ismethod(cls) else cls.__init__
    return {n: p for n, p in inspect.signature(target).parameters.items() if n != "self"}


def parse_model_args(
    name: str, configured: dict[str, Any], extra_flags: Sequence[str], image_size: int | None = None
) -> dict[str, Any]:
    """The options to pass to a model: config ``model_args`` < leftover flags; the rest keep
    the model's own defaults (so a checkpoint records only plain, explicit values).

    A model that takes ``input_size`` (``img_size`` for SparseViT) gets the run's image size unless it was set explicitly.
    Unknown options are errors naming the option and listing the model's own.
    """
    from imdlbenco_maskclip.compat import model_argparser

    cls = model_class(name)
    params = init_parameters(cls)
    unknown = [key for key in configured if key not in params]
    if unknown:
        raise UserError(f"model_args: {name} has no option {', '.join(unknown)} (its options: {', '.join(params) or 'none'})")
    parser = model_argparser(cls, with_defaults=False)
    try:
        given, rest = parser.parse_known_args(list(extra_flags))
    except SystemExit:
        raise UserError(f"bad value for one of {name}'s options in: {' '.join(extra_flags)}") from None
    if rest:
        raise UserError(f"unrecognized arguments: {' '.join(rest)} ({name}'s own options: {', '.join('--' + p for p in params)})")
    values = {**configured, **vars(given)}
    for key in SIZE_OPTIONS:
        if key in params and image_size:
            values.setdefault(key, image_size)
    return values


def from_checkpoint(
    checkpoint: str, model_name: str | None, configured: dict[str, Any], extra_flags: Sequence[str], image_size: int | None
) -> tuple[torch.nn.Module, str, TrainingState]:
    """The model a checkpoint holds (options: recorded < config < flags), its name and what
    else the file records (``selected_on``, ``args``, ...), read once, through
    ``loading.build_from_checkpoint``, with its errors as flag-named ``UserError``\ s."""
    from imdlbenco_maskclip.loading import build_from_checkpoint, read_checkpoint

    try:
        stored = read_checkpoint(checkpoint)
    except FileNotFoundError as error:
        raise UserError(f"--checkpoint: {error}") from None
    if model_name and stored.model_name and model_name != stored.model_name:
        raise UserError(f"--model {model_name}: {checkpoint} holds a {stored.model_name} (leave --model out to use it)")
    name = model_name or stored.model_name
    if not name:
        raise UserError(f"--model: {checkpoint} does not record which model it holds; pass --model NAME")
    model_args = parse_model_args(name, {**stored.model_options, **configured}, extra_flags, image_size)
    try:
        return build_from_checkpoint(stored, name, **model_args), name, stored.saved
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, AssertionError) as error:
        raise as_user_error(error, f"--checkpoint {checkpoint}") from None


def as_user_error(error: Exception, context: str) -> UserError:
    """A model's Python error as the CLI reports it: ``--OPTION: ...`` when the error names
    the option at fault (``model.errors``), else ``CONTEXT: Type: message``."""
    option = getattr(error, "option", None)
    if option:
        return UserError(f"--{error}")
    return UserError(f"{context}: {type(error).__name__}: {error}")


def build_model(name: str, model_args: dict[str, Any]) -> torch.nn.Module:
    """Instantiate ``name`` with ``model_args``; construction failures name the model or the option."""
    cls = model_class(name)
    try:
        return cls(**model_args)
    except UserError:
        raise
    except (OSError, RuntimeError, ValueError, TypeError, AssertionError) as error:
        raise as_user_error(error, f"could not build {name} with {model_args}") from error


def model_options_help(name: str) -> str:
    from imdlbenco_maskclip.compat import model_argparser

    parser: argparse.ArgumentParser = model_argparser(model_class(name))
    return parser.format_help()
