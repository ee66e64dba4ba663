"""State dicts of the published OpenSDI ``MaskCLIP('ViTL')`` mapped onto this package's names.

The published ``train.py`` saves Benco's layout (``{'model': state_dict, 'epoch', 'args', ...}``)
with the whole model, frozen CLIP included in OpenAI ``clip`` naming. Its modules and ours
compute the same function with differently named (in two places differently shaped) tensors:

==============================================================  =====================================
published                                                       here
==============================================================  =====================================
``clip.*`` (OpenAI naming, which open_clip keeps)               ``clip.model.*``
``prompt_learner.ctx_neg`` / ``ctx_pos`` (1 x n x w each)       ``prompts.contexts`` [0] real / [1] fake
``aggregator.vit_model.*`` (timm ``mlp.fc1/fc2``)               ``side_vit.*`` (``mlp.lin1/lin2``)
``aggregator.text_projection``                                  ``mask_decoder.query_proj``
``aggregator.fusion_layers.layer_B.channel_adjust.0`` (1x1 conv) ``fusions.T.clip_proj`` (linear)
``... .channel_adjust.1`` / ``query_proj`` / ``key_proj`` /     ``fusions.T.clip_norm`` / ``attn.q_proj`` /
``value_proj`` / ``output_proj.0`` / ``output_proj.1``          ``attn.k_proj`` / ``attn.v_proj`` / ``attn.out_proj`` / ``out_norm``
``aggregator.mask_decoder.stages.S.*``                          ``mask_decoder.scales.S.*`` + ``laterals.S.*``
``aggregator.mask_decoder.linear_fuse`` / ``norm`` / ``predict`` ``mask_decoder.fuse`` / ``norm`` / ``predict``
``aggregator.mask_decoder.to_q`` / ``to_kv`` / ``proj``         ``mask_decoder.query_attn.q_proj`` / ``k_proj`` + ``v_proj`` / ``out_proj``
``cls_aggregator.layers.0.multihead_attn`` / ``layer_norm``     ``detection_head.attn`` / ``norm``
``cls_aggregator.projector.0``                                  ``detection_head.proj``
==============================================================  =====================================

Fusion layer ``layer_B`` follows side block B and reads CLIP tap T, where B = ``fuse_after[T]``.
The ``ctx_pos`` context is the "fake" one: the published code puts ``ctx_neg`` prompts first,
scores class 1 (fake) against the second and queries the mask decoder with it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping

import torch

from imdlbenco_maskclip.model.settings import SETTINGS, MaskCLIPSettings
from imdlbenco_maskclip.model.weights import timm_block_key

MARKERS = ("prompt_learner.ctx_pos", "aggregator.vit_model.patch_embed.proj.weight")
CONTEXTS = ("prompt_learner.ctx_neg", "prompt_learner.ctx_pos")
FAMILY = ("aggregator.", "cls_aggregator.", "prompt_learner.")
"""Top-level modules of the published code: a state dict whose keys start with them is of
that family (the published network or an earlier variant of it)."""

# Per decoder stage: how many leading published layers belong to the scale (up/down-sampling);
# the four after them are the lateral conv, norm, conv, norm.
_SCALE_LAYERS = (4, 1, 0, 1)

_FUSION_PARTS = {
    "channel_adjust.0": "clip_proj",
    "channel_adjust.1": "clip_norm",
    "query_proj": "attn.q_proj",
    "key_proj": "attn.k_proj",
    "value_proj": "attn.v_proj",
    "output_proj.0": "attn.out_proj",
    "output_proj.1": "out_norm",
}

_PLAIN = (
    ("aggregator.text_projection.", "mask_decoder.query_proj."),
    ("aggregator.mask_decoder.linear_fuse.", "mask_decoder.fuse."),
    ("aggregator.mask_decoder.norm.", "mask_decoder.norm."),
    ("aggregator.mask_decoder.predict.", "mask_decoder.predict."),
    ("aggregator.mask_decoder.to_q.", "mask_decoder.query_attn.q_proj."),
    ("aggregator.mask_decoder.proj.", "mask_decoder.query_attn.out_proj."),
    ("cls_aggregator.layers.0.multihead_attn.", "detection_head.attn."),
    ("cls_aggregator.layers.0.layer_norm.", "detection_head.norm."),
    ("cls_aggregator.projector.0.", "detection_head.proj."),
    ("clip.", "clip.model."),
)


def is_published(state: Mapping[str, torch.Tensor]) -> bool:
    """Whether a state dict is the published model's, or of its family (a DDP ``module.``
    prefix already removed): it holds both markers, or most of its keys outside the frozen CLIP
    are under the published code's module names. The CLIP is left out of the count: at full
    size it holds more keys (446 of 779) than the rest of the network."""
    if all(marker in state for marker in MARKERS):
        return True
    trained = [key for key in state if not key.startswith("clip.")]
    family = sum(1 for key in trained if key.startswith(FAMILY))
    return family > 0 and family * 2 >= len(trained)


def _decoder_stage_key(stage: int, layer: int, rest: str) -> str:
    scale_layers = _SCALE_LAYERS[stage]
    if layer < scale_layers:
        inner = f".{layer}" if scale_layers > 1 else ""
        return f"mask_decoder.scales.{stage}{inner}.{rest}"
    return f"mask_decoder.laterals.{stage}.{layer - scale_layers}.{rest}"


def from_published(state: Mapping[str, torch.Tensor], settings: MaskCLIPSettings) -> dict[str, torch.Tensor]:
    """The published state dict under this package's names and shapes.

    A key that has no place here (a published model of another shape, an earlier variant, or
    not the published model at all) is kept under its own name, so that a strict load lists it
    as unexpected beside the keys the network misses and the shapes that differ.
    """
    tap_of_block = {block: tap for tap, block in enumerate(settings.fuse_after)}
    mapped: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        target = None
        if key.startswith("aggregator.vit_model."):
            target = "side_vit." + timm_block_key(key[len("aggregator.vit_model.") :])
        elif key in CONTEXTS and all(k in state for k in CONTEXTS):
            continue
        elif match := re.fullmatch(r"aggregator\.fusion_layers\.layer_(\d+)\.(.+)\.(weight|bias)", key):
            block, part, kind = int(match[1]), match[2], match[3]
            if block in tap_of_block and part in _FUSION_PARTS:
                target = f"fusions.{tap_of_block[block]}.{_FUSION_PARTS[part]}.{kind}"
                if part == "channel_adjust.0" and kind == "weight":
                    value = value.flatten(1)
        elif match := re.fullmatch(r"aggregator\.mask_decoder\.stages\.(\d)\.(\d+)\.(.+)", key):
            target = _decoder_stage_key(int(match[1]), int(match[2]), match[3])
        elif key.startswith("aggregator.mask_decoder.to_kv.") and value.dim() >= 1 and value.shape[0] % 2 == 0:
            kind = key.rsplit(".", 1)[1]
            key_part, value_part = value.chunk(2, dim=0)
            mapped[f"mask_decoder.query_attn.k_proj.{kind}"] = key_part
            mapped[f"mask_decoder.query_attn.v_proj.{kind}"] = value_part
            continue
        else:
            for old, new in _PLAIN:
                if key.startswith(old):
                    target = new + key[len(old) :]
                    break
        mapped[key if target is None else target] = value
    if all(k in state for k in CONTEXTS):
        mapped["prompts.contexts"] = torch.cat([state[CONTEXTS[0]], state[CONTEXTS[1]]], dim=0)
    return mapped


def to_published(state: Mapping[str, torch.Tensor], settings: MaskCLIPSettings) -> dict[str, torch.Tensor]:
    """This package's state dict of a MaskCLIP (frozen CLIP included) under the published
    names and shapes: the inverse of ``from_published``, as the published ``train.py`` would
    have saved the same network."""
    published: dict[str, torch.Tensor] = {}
    parts = {ours: theirs for theirs, ours in _FUSION_PARTS.items()}
    for key, value in state.items():
        if key.startswith("side_vit."):
            published["aggregator.vit_model." + timm_block_key(key[len("side_vit.") :], reverse=True)] = value
        elif key == "prompts.contexts":
            published[CONTEXTS[0]], published[CONTEXTS[1]] = value[0:1], value[1:2]
        elif match := re.fullmatch(r"fusions\.(\d+)\.(.+)\.(weight|bias)", key):
            tap, part, kind = int(match[1]), match[2], match[3]
            if part == "clip_proj" and kind == "weight":
                value = value[:, :, None, None]
            published[f"aggregator.fusion_layers.layer_{settings.fuse_after[tap]}.{parts[part]}.{kind}"] = value
        elif match := re.fullmatch(r"mask_decoder\.scales\.(\d)\.(?:(\d+)\.)?(.+)", key):
            stage = int(match[1])
            layer = int(match[2]) if _SCALE_LAYERS[stage] > 1 else 0
            published[f"aggregator.mask_decoder.stages.{stage}.{layer}.{match[3]}"] = value
        elif match := re.fullmatch(r"mask_decoder\.laterals\.(\d)\.(\d+)\.(.+)", key):
            stage = int(match[1])
            published[f"aggregator.mask_decoder.stages.{stage}.{_SCALE_LAYERS[stage] + int(match[2])}.{match[3]}"] = (
                value
            )
        elif match := re.fullmatch(r"mask_decoder\.query_attn\.k_proj\.(weight|bias)", key):
            kind = match[1]
            published[f"aggregator.mask_decoder.to_kv.{kind}"] = torch.cat(
                [value, state[f"mask_decoder.query_attn.v_proj.{kind}"]], dim=0
            )
        elif not key.startswith("mask_decoder.query_attn.v_proj."):
            prefix = next(((old, new) for old, new in _PLAIN if key.startswith(new)), None)
            if prefix is None:
                raise ValueError(f"{key} has no place in the published MaskCLIP")
            published[prefix[0] + key[len(prefix[1]) :]] = value
    return published


@functools.cache
def network_shapes(setting: str) -> dict[str, tuple[int, ...]]:
    """Every tensor name and shape of a setting's whole network (frozen CLIP included), read
    off the network built on the meta device (nothing allocated)."""
    from imdlbenco_maskclip.model.maskclip import MaskCLIP

    with torch.device("meta"):
        network = MaskCLIP(setting)
    return {key: tuple(value.shape) for key, value in network.state_dict().items()}


def published_setting(state: Mapping[str, torch.Tensor]) -> str:
    """The setting whose network a state dict of the published layout fits best: the one with
    the fewest missing, unexpected and differently shaped tensors (the first such, ``paper``
    before the others). ``paper`` for the released files, ``tiny`` for a scaled-down file of
    the same layout; for an earlier variant, the setting loading then lists the differences from."""

    def differences(name: str) -> int:
        mapped, shapes = from_published(state, SETTINGS[name]), network_shapes(name)
        return len(mapped.keys() ^ shapes.keys()) + sum(
            1 for key, shape in shapes.items() if key in mapped and tuple(mapped[key].shape) != shape
        )

    return min(SETTINGS, key=differences)
