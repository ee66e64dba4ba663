"""Build any model in Benco's ``MODELS`` registry from its name and its own options.

Model options are the model's ``__init__`` parameters, parsed as flags by
``workarounds.model_argparser`` (Benco's ``create_argparser`` with its type faults fixed). They come
from the run config's ``model_args``, then from flags left over after the command's own.
"""

from __future__ import annotations

import argparse
import inspect
import re
from collections.abc import Sequence
from typing import Any

import torch

from imdlbenco_maskclip.common.errors import UserError

# Model options that must equal the run's image size (Benco's models name it either way).
SIZE_OPTIONS = ("input_size", "img_size")
# Options naming a pretrained file (or asking for a download) that a model loads at construction:
# IML_ViT's vit_pretrain_path, PSCC_Net's pretrain_path, MVSSNet's pretrained_base, Trufor's ...
PRETRAINED_FILE_OPTION = re.compile(r"pretrain|weights?_path|_weights$|resume_ckpt")


def model_class(name: str) -> Any:
    """The registered class (or factory) called ``name``; the error suggests close names."""
    import difflib

    from IMDLBenCo.registry import MODELS  # importing it registers MaskCLIP (see ``registration``)

    if MODELS.has(name):
        return MODELS.module_dict[name]
    close = difflib.get_close_matches(name, MODELS.module_dict.keys(), n=3, cutoff=0.3)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    raise UserError(
        f"--model: '{name}' is not a registered model.{hint} Registered: {', '.join(sorted(MODELS.module_dict))}"
    )


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
    from imdlbenco_maskclip.host.workarounds import model_argparser

    cls = model_class(name)
    params = init_parameters(cls)
    unknown = [key for key in configured if key not in params]
    if unknown:
        raise UserError(
            f"model_args: {name} has no option {', '.join(unknown)} (its options: {', '.join(params) or 'none'})"
        )
    parser = model_argparser(cls, with_defaults=False)
    try:
        given, rest = parser.parse_known_args(list(extra_flags))
    except SystemExit:
        raise UserError(f"bad value for one of {name}'s options in: {' '.join(extra_flags)}") from None
    if rest:
        raise UserError(
            f"unrecognized arguments: {' '.join(rest)} ({name}'s own options: {', '.join('--' + p for p in params)})"
        )
    return with_size_options(params, {**configured, **vars(given)}, image_size)


def with_size_options(params: Any, values: dict[str, Any], image_size: int | None) -> dict[str, Any]:
    """``values`` with each size option the model takes (``SIZE_OPTIONS`` among ``params``) set to
    ``image_size`` unless given."""
    for key in SIZE_OPTIONS:
        if key in params and image_size:
            values.setdefault(key, image_size)
    return values


def without_pretrained_files(name: str, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with every option of ``name`` that names a pretrained file to load at
    construction (``PRETRAINED_FILE_OPTION``) set to "no file": False for a switch, else None
    (or the model's own spelling of it, ``workarounds.no_pretrained_file``). For building a
    model whose weights a checkpoint replaces, so nothing is read or fetched only to be
    overwritten."""
    from imdlbenco_maskclip.host.workarounds import no_pretrained_file

    params = init_parameters(model_class(name))
    cleared = dict(options)
    for key, param in params.items():
        if PRETRAINED_FILE_OPTION.search(key):
            cleared[key] = False if isinstance(param.default, bool) else no_pretrained_file(name, key)
    return cleared


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
    from imdlbenco_maskclip.host.workarounds import model_argparser

    parser: argparse.ArgumentParser = model_argparser(model_class(name))
    return parser.format_help()
