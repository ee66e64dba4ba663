"""``build_maskclip``: the network of a setting with its pretrained sources loaded.

Registered in Benco's ``MODELS`` as ``MaskCLIP`` (the registry takes functions), so Benco's
scripts and ``benco train --model MaskCLIP`` build it by name; its parameters are the model's
command-line options. The network itself (``maskclip.MaskCLIP``) never loads anything: this
factory resolves the sources (a CLIP tag or file; an MAE or SAM file or URL) and each source
carries its own key remapping (``weights.py``). Loading a trained checkpoint does not come
through ``build_maskclip`` but through ``network_for_weights``, so nothing is fetched only to be
overwritten and nothing is allocated before the weights arrive (it builds on the meta device).

Note: this module must not use ``from __future__ import annotations``; Benco's
``create_argparser`` reads the parameter annotations as argparse types.
"""

import logging
from typing import Any, Mapping

import torch
from IMDLBenCo.registry import MODELS

from imdlbenco_maskclip.common.errors import OptionError
from imdlbenco_maskclip.model.maskclip import NO_SOURCE, MaskCLIP
from imdlbenco_maskclip.model.settings import SIDE_INITS, SIDE_SOURCES, get_setting
from imdlbenco_maskclip.model.weights import create_clip, is_none, load_side_weights

logger = logging.getLogger(__name__)

DEFAULT = "default"


def _is_default(value) -> bool:
    return value is not None and str(value).strip().lower() == DEFAULT


def resolve_source(value, default: str) -> str:
    """A weights option: ``default`` -> the setting's, None/``none`` -> ``none``, else as given."""
    if _is_default(value):
        return default
    return NO_SOURCE if is_none(value) else str(value).strip()


@MODELS.register_module(name="MaskCLIP")
def build_maskclip(
    setting: str = "paper",
    clip_pretrained: str = DEFAULT,
    side_init: str = DEFAULT,
    side_weights: str = DEFAULT,
    edge_lambda: float = 20.0,
    grad_checkpointing: bool = False,
) -> MaskCLIP:
    """MaskCLIP with pretrained weights.

    Args:
        setting: ``paper`` (the published network: CLIP ViT-L/14 + MAE ViT-B side at 512),
            ``paper_sam`` (side network from SAM), ``base`` (CLIP ViT-B/16) or ``tiny``
            (small, random, for tests and CPU demos at 64-128 px).
        clip_pretrained: an open_clip tag of the setting's CLIP (``openai``), a local
            checkpoint file, or ``none`` for random weights; ``default`` takes the setting's
            (``openai`` for paper/base, ``none`` for tiny).
        side_init: ``mae``, ``sam`` or ``none``; ``default`` takes the setting's.
        side_weights: a local file or URL of the ``side_init`` checkpoint; ``default`` is the
            official URL, fetched into torch.hub's cache.
        edge_lambda: weight of the edge-restricted BCE term.
        grad_checkpointing: recompute the side blocks in backward instead of keeping their
            activations (less memory at large batches, same function).
    """
    settings = get_setting(setting)
    clip_source = resolve_source(clip_pretrained, settings.clip.pretrained)
    init = resolve_source(side_init, settings.side.init).lower()
    if init not in SIDE_INITS:
        raise OptionError("side_init", f"'{side_init}' is not one of {', '.join(SIDE_INITS)}")
    weights_given = not (_is_default(side_weights) or is_none(side_weights))
    if init == NO_SOURCE and weights_given:
        raise OptionError("side_weights", "given but side_init is none: pass --side_init mae or --side_init sam")
    clip, clip_source = create_clip(settings.clip, clip_source) if clip_source != NO_SOURCE else (None, NO_SOURCE)
    model = MaskCLIP(settings, edge_lambda=edge_lambda, grad_checkpointing=grad_checkpointing, clip=clip)
    model.clip_source = clip_source
    if init != NO_SOURCE:
        source = str(side_weights).strip() if weights_given else SIDE_SOURCES[init].url
        model.weights_report = load_side_weights(model.side_vit, settings.side, init, source)
    return model


def holds_clip(state: Mapping[str, Any]) -> bool:
    """Whether a MaskCLIP state dict holds the frozen CLIP's tensors (else it is rebuilt from
    its source when the weights are loaded)."""
    return any(key.startswith("clip.") for key in state)


def network_for_weights(options: Mapping[str, Any], carries_clip: bool) -> MaskCLIP:
    """The network of ``options`` (a checkpoint's recorded ``build_maskclip`` options) ready to
    receive trained weights by assignment: built on the meta device (no memory, no random
    initialization), the side network never initialized from MAE or SAM. The frozen CLIP comes
    from its pretrained source, with its weights, only when the trained weights do not carry
    one (``carries_clip``). After the weights are assigned, ``rebuild_buffers`` computes what
    the state dict does not hold."""
    settings = get_setting(options.get("setting", "paper"))
    clip, source = None, NO_SOURCE
    if not carries_clip:
        source = resolve_source(options.get("clip_pretrained", DEFAULT), settings.clip.pretrained)
        if source != NO_SOURCE:
            clip, source = create_clip(settings.clip, source)
    with torch.device("meta"):
        model = MaskCLIP(
            settings,
            edge_lambda=float(options.get("edge_lambda", 20.0)),
            grad_checkpointing=bool(options.get("grad_checkpointing", False)),
            clip=clip,
        )
    model.clip_source = source
    return model
