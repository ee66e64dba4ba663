"""Pretrained weights: the CLIP through open_clip, the side ViT from MAE or SAM checkpoints.

CLIP weights are an open_clip pretrained tag (downloaded and cached by open_clip), a local
file (read by ``open_clip.load_checkpoint``; taken to be the setting's default kind of
weights, OpenAI's, for the activation and image statistics) or ``none`` (random). Side weights are the
official MAE or SAM files, fetched into torch.hub's cache from their URLs, or local paths;
both are remapped onto the side network's segment-anything names and resized to its grid.
Every problem a user can fix (no network, a wrong path, weights that do not fit the
setting) is a ``UserError`` that names the file, where to get it and the flag to pass.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass, field
from typing import Mapping, NamedTuple

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.model.settings import SIDE_SOURCES, ClipSettings, SideSettings, WeightSource

logger = logging.getLogger(__name__)

NONE_VALUES = ("", "none", "null", "random")


def is_none(value: str | None) -> bool:
    """Whether a weights option asks for random weights (``none``; None from a YAML/flag parser)."""
    return value is None or str(value).strip().lower() in NONE_VALUES


@dataclass
class LoadReport:
    """What loading a checkpoint did: tensors loaded, side keys left at their initial
    values by design (``initialized``), side keys the file lacked (``missing``), file keys
    that fit nothing (``unexpected``) and file keys known to be unused (``unused``)."""

    source: str
    loaded: int = 0
    initialized: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def short(keys: list[str]) -> str:
            return ", ".join(keys[:4]) + (f", ... ({len(keys)} in all)" if len(keys) > 4 else "")

        parts = [f"{self.source}: loaded {self.loaded} tensors"]
        if self.initialized:
            parts.append(f"kept at initialization {len(self.initialized)} ({short(self.initialized)})")
        if self.unused:
            parts.append(f"skipped {len(self.unused)} unused")
        parts.append(f"missing {len(self.missing)}" + (f" ({short(self.missing)})" if self.missing else ""))
        parts.append(f"unexpected {len(self.unexpected)}" + (f" ({short(self.unexpected)})" if self.unexpected else ""))
        return "; ".join(parts)


# ---------------------------------------------------------------- CLIP


def _clip_config(settings: ClipSettings) -> dict:
    if settings.config is not None:
        return {key: (dict(value) if isinstance(value, Mapping) else value) for key, value in settings.config.items()}
    config = open_clip.get_model_config(settings.model)
    if config is None:
        raise ValueError(f"open_clip has no model config '{settings.model}'")
    return config


def _download_clip(settings: ClipSettings, tag: str, source: Mapping) -> str:
    hub = source.get("hf_hub", "").rstrip("/")
    where = f"https://huggingface.co/{hub}" if hub else source.get("url", "")
    try:
        return open_clip.download_pretrained(dict(source))
    except Exception as error:  # hub and URL downloads raise many types
        raise UserError(
            f"--clip_pretrained: could not download the open_clip weights {settings.model}/{tag} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Download open_clip_pytorch_model.bin from {where} "
            "where there is network, then pass --clip_pretrained /path/to/open_clip_pytorch_model.bin"
        ) from None


class LoadedClip(NamedTuple):
    """An open_clip ``CLIP``, where its weights came from (``"none"`` when random) and the
    image statistics it expects."""

    model: nn.Module
    source: str
    mean: tuple[float, ...]
    std: tuple[float, ...]


def build_clip(settings: ClipSettings, pretrained: str | None) -> LoadedClip:
    """The open_clip ``CLIP`` of a setting with weights from ``pretrained``: a tag of
    ``settings.model`` (downloaded and cached by open_clip), a file path or ``none``."""
    config = _clip_config(settings)
    if is_none(pretrained):
        model = open_clip.CLIP(**config, quick_gelu=settings.quick_gelu)
        return LoadedClip(model, "none", OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    path = os.path.expanduser(str(pretrained))
    if os.path.isfile(path):
        model = open_clip.CLIP(**config, quick_gelu=settings.quick_gelu)
        try:
            open_clip.load_checkpoint(model, path)
        except Exception as error:
            raise UserError(
                f"--clip_pretrained: {path} does not fit the CLIP of this setting ({settings.model or 'explicit config'}): "
                f"{type(error).__name__}: {str(error)[:400]}"
            ) from None
        logger.info("CLIP: loaded %s", path)
        return LoadedClip(model, path, OPENAI_DATASET_MEAN, OPENAI_DATASET_STD)
    source = open_clip.get_pretrained_cfg(settings.model, pretrained) if settings.model else {}
    if not source:
        tags = open_clip.list_pretrained_tags_by_model(settings.model) if settings.model else []
        raise UserError(
            f"--clip_pretrained: '{pretrained}' is neither a file nor an open_clip tag of {settings.model or 'this setting'}"
            + (f" (tags: {', '.join(tags)})" if tags else " (use none or a file path)")
        )
    checkpoint = _download_clip(settings, pretrained, source)
    model = open_clip.CLIP(**config, quick_gelu=bool(source.get("quick_gelu", False)))
    open_clip.load_checkpoint(model, checkpoint)
    logger.info("CLIP: loaded %s/%s from %s", settings.model, pretrained, checkpoint)
    mean, std = tuple(source.get("mean", OPENAI_DATASET_MEAN)), tuple(source.get("std", OPENAI_DATASET_STD))
    return LoadedClip(model, f"{settings.model}/{pretrained}", mean, std)


# ---------------------------------------------------------------- side network


def _fetch_side_checkpoint(init: str, weights: str) -> tuple[dict, str]:
    source: WeightSource = SIDE_SOURCES[init]
    flag = f"--side_weights /path/to/{source.file_name}"
    if weights.startswith(("http://", "https://")):
        try:
            raw = torch.hub.load_state_dict_from_url(
                weights, map_location="cpu", file_name=os.path.basename(weights), weights_only=True
            )
        except Exception as error:  # URLError, HTTPError, timeouts, unpickling errors
            cache = os.path.join(torch.hub.get_dir(), "checkpoints")
            raise UserError(
                f"--side_weights: could not download {source.name} ({os.path.basename(weights)}) from {weights}: "
                f"{type(error).__name__}: {error}. Download it where there is network and pass {flag}, "
                f"or put it in {cache}; --side_init none starts the side network from random weights"
            ) from None
        return raw, weights
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise UserError(f"--side_weights: no file {path} (get {source.file_name} from {source.url} and pass {flag})")
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise UserError(
            f"--side_weights: cannot read {path} as a PyTorch checkpoint: {type(error).__name__}: {error}"
        ) from None
    return raw, path


def _resize_grid(table: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """A 1 x h x w x C position table resized (bicubic) to ``grid``."""
    if tuple(table.shape[1:3]) == tuple(grid):
        return table
    shrink = grid[0] < table.shape[1] or grid[1] < table.shape[2]
    resized = F.interpolate(table.permute(0, 3, 1, 2).float(), size=grid, mode="bicubic", align_corners=False, antialias=shrink)
    return resized.permute(0, 2, 3, 1).to(table.dtype)


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A relative-position table L x C resized (linear, as segment-anything's ``get_rel_pos``) to ``length``."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0).float(), size=length, mode="linear")
    return resized[0].t().to(table.dtype)


def remap_mae(state: Mapping[str, torch.Tensor], side: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MAE / timm ViT names -> the side network's; returns (mapped, unused keys).

    ``mlp.fc1/fc2`` become ``mlp.lin1/lin2``; ``pos_embed`` (1 x 1+n*n x C) loses its class
    token and is resized to the side grid; ``cls_token``, the final ``norm`` and any MAE
    decoder weights are unused.
    """
    target = side.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key in ("cls_token", "mask_token") or key.startswith(("norm.", "decoder_", "head.", "fc_norm.")):
            unused.append(key)
        elif key == "pos_embed":
            tokens = value[:, 1:] if value.shape[1] != int(math.isqrt(value.shape[1])) ** 2 else value
            side_len = math.isqrt(tokens.shape[1])
            table = tokens.reshape(1, side_len, side_len, -1)
            mapped["pos_embed"] = _resize_grid(table, tuple(target["pos_embed"].shape[1:3]))
        else:
            mapped[key.replace(".mlp.fc1.", ".mlp.lin1.").replace(".mlp.fc2.", ".mlp.lin2.")] = value
    return mapped, unused


def remap_sam(state: Mapping[str, torch.Tensor], side: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SAM checkpoint -> the side network; returns (mapped, unused keys).

    Keeps ``image_encoder.*`` without the prefix, drops the neck and the prompt encoder and
    mask decoder, resizes ``pos_embed`` to the side grid and each relative-position table to
    the length the side block expects (global blocks: 2*64-1 -> 2*grid-1; window blocks keep
    2*14-1).
    """
    target = side.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if not key.startswith("image_encoder.") or key.startswith("image_encoder.neck."):
            unused.append(key)
            continue
        name = key[len("image_encoder.") :]
        if name == "pos_embed" and name in target:
            value = _resize_grid(value, tuple(target[name].shape[1:3]))
        elif name.endswith((".rel_pos_h", ".rel_pos_w")) and name in target:
            value = _resize_rel_pos(value, target[name].shape[0])
        mapped[name] = value
    return mapped, unused


def load_side_weights(side: nn.Module, settings: SideSettings, init: str, weights: str) -> LoadReport:
    """Load MAE or SAM weights (URL or path) into the side network, strictly by shape.

    Relative-position tables are not in MAE checkpoints; they keep their zero
    initialization (as in ViTDet) and are reported as ``initialized``, not ``missing``.
    """
    source = SIDE_SOURCES[init]
    if (settings.width, settings.depth, settings.patch_size) != (source.width, source.depth, source.patch_size):
        raise UserError(
            f"--side_init {init}: {source.name} is a ViT with width {source.width}, depth {source.depth}, patch "
            f"{source.patch_size}; this setting's side network has width {settings.width}, depth {settings.depth}, "
            f"patch {settings.patch_size} (use setting paper or base, or --side_init none)"
        )
    raw, where = _fetch_side_checkpoint(init, weights)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"--side_weights: {where} holds no state dict of tensors")
    mapped, unused = (remap_mae if init == "mae" else remap_sam)(state, side)
    try:
        result = side.load_state_dict(mapped, strict=False)
    except RuntimeError as error:
        raise UserError(f"--side_weights: {where} does not fit the side network for --side_init {init}: {error}") from None
    expected_absent = {k for k in result.missing_keys if init == "mae" and k.endswith((".rel_pos_h", ".rel_pos_w"))}
    report = LoadReport(
        source=f"side network ({init}) from {where}",
        loaded=len(mapped) - len(result.unexpected_keys),
        initialized=sorted(expected_absent),
        missing=[k for k in result.missing_keys if k not in expected_absent],
        unexpected=list(result.unexpected_keys),
        unused=unused,
    )
    (logger.warning if report.missing or report.unexpected else logger.info)("%s", report.summary())
    return report
