"""Pretrained sources: the frozen CLIP through open_clip, the side ViT from MAE or SAM files.

CLIP weights are an open_clip pretrained tag of the setting's architecture (downloaded and
cached by open_clip) or a local file, both through ``open_clip.create_model``, or ``none``
(random). Side weights are the official MAE or SAM files, fetched into torch.hub's cache from
their URLs, or local paths; each source has its own key remapping onto the side network's
segment-anything names. Every problem a user can fix (no network, a wrong path, weights that
do not fit the setting) raises ``OptionError`` (a ValueError) or ``SourceNotFound`` (a
FileNotFoundError) naming the option, the file, where to get it and what to pass instead.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from timm.layers import resample_abs_pos_embed
from torch import nn

from imdlbenco_maskclip.common.errors import OptionError, SourceNotFound
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


def create_clip(settings: ClipSettings, pretrained: str) -> tuple[nn.Module, str]:
    """The open_clip ``CLIP`` of ``settings`` with weights from ``pretrained`` (a tag of
    ``settings.model``, downloaded and cached by open_clip, or a file path), through
    ``open_clip.create_model``; and where the weights came from. A tag whose activation or
    image statistics differ from the setting's is refused: the network would not be the one
    the weights were trained as."""
    path = os.path.expanduser(str(pretrained))
    if os.path.isfile(path):
        try:
            model = open_clip.create_model(settings.model, pretrained=path, force_quick_gelu=settings.quick_gelu)
        except Exception as error:  # open_clip raises RuntimeError, KeyError, pickling errors
            raise OptionError(
                "clip_pretrained",
                f"{path} does not fit the CLIP of this setting ({settings.model}): {type(error).__name__}: {str(error)[:400]}",
            ) from None
        logger.info("CLIP: loaded %s", path)
        return model, path
    source = open_clip.get_pretrained_cfg(settings.model, pretrained)
    if not source:
        tags = open_clip.list_pretrained_tags_by_model(settings.model)
        raise OptionError(
            "clip_pretrained",
            f"'{pretrained}' is neither a file nor an open_clip tag of {settings.model}"
            + (f" (tags: {', '.join(tags)})" if tags else " (use none or a file path)"),
        )
    statistics = (tuple(source.get("mean", OPENAI_DATASET_MEAN)), tuple(source.get("std", OPENAI_DATASET_STD)))
    if bool(source.get("quick_gelu", False)) != settings.quick_gelu or statistics != (
        OPENAI_DATASET_MEAN,
        OPENAI_DATASET_STD,
    ):
        raise OptionError(
            "clip_pretrained",
            f"{settings.model}/{pretrained} uses another activation or image statistics than this setting's CLIP "
            "(QuickGELU, OpenAI's mean and std); use the openai tag or a file of those weights",
        )
    try:
        model = open_clip.create_model(settings.model, pretrained=pretrained, force_quick_gelu=settings.quick_gelu)
    except Exception as error:  # hub and URL downloads raise many types
        hub = source.get("hf_hub", "").rstrip("/")
        where = f"https://huggingface.co/{hub}" if hub else source.get("url", "")
        raise SourceNotFound(
            "clip_pretrained",
            f"could not download the open_clip weights {settings.model}/{pretrained} ({type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}). Download open_clip_pytorch_model.bin from {where} "
            "where there is network, then pass --clip_pretrained /path/to/open_clip_pytorch_model.bin",
        ) from None
    logger.info("CLIP: loaded %s/%s", settings.model, pretrained)
    return model, f"{settings.model}/{pretrained}"


def cached_clip_file(settings: ClipSettings, pretrained: str) -> str | None:
    """The local file of a CLIP source, found without downloading: the file itself, or the
    weights of an open_clip tag when huggingface_hub's cache already holds them (where
    ``create_clip`` would find them); None when it is not at hand."""
    path = os.path.expanduser(str(pretrained))
    if os.path.isfile(path):
        return path
    hub = (open_clip.get_pretrained_cfg(settings.model, pretrained) or {}).get("hf_hub", "")
    if not hub:
        return None
    from huggingface_hub import try_to_load_from_cache
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    model_id, filename = os.path.split(hub)
    if not filename:
        names = [HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME]
    elif filename.endswith((".bin", ".pth")):
        names = [filename[:-4] + ".safetensors", filename]
    else:
        names = [filename]
    for name in names:
        found = try_to_load_from_cache(model_id, name)
        if isinstance(found, str):
            return found
    return None


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
            raise SourceNotFound(
                "side_weights",
                f"could not download {source.name} ({os.path.basename(weights)}) from {weights}: "
                f"{type(error).__name__}: {error}. Download it where there is network and pass {flag}, "
                f"or put it in {cache}; --side_init none starts the side network from random weights",
            ) from None
        return raw, weights
    path = os.path.expanduser(weights)
    if not os.path.isfile(path):
        raise SourceNotFound(
            "side_weights", f"no file {path} (get {source.file_name} from {source.url} and pass {flag})"
        )
    try:
        raw = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        raise OptionError(
            "side_weights", f"cannot read {path} as a PyTorch checkpoint: {type(error).__name__}: {error}"
        ) from None
    return raw, path


def fit_position_table(table: torch.Tensor, class_slot: bool, target: torch.Tensor) -> torch.Tensor:
    """A square position table (1 x [1 +] n*n x C, or SAM's 1 x n x n x C) in the layout of
    ``target`` (1 x [1 +] m*m x C, the side network's own, class slot or not): resized
    bicubically (antialiased when shrinking) and given a zero class slot where the target has
    one and the source does not."""
    if table.dim() == 4:
        grid = table.reshape(1, -1, table.shape[-1])
    else:
        grid = table[:, 1:] if class_slot else table
    target_prefix = target.shape[1] - math.isqrt(target.shape[1]) ** 2
    source_side, target_side = math.isqrt(grid.shape[1]), math.isqrt(target.shape[1] - target_prefix)
    if source_side != target_side:
        grid = resample_abs_pos_embed(
            grid,
            [target_side, target_side],
            [source_side, source_side],
            num_prefix_tokens=0,
            antialias=target_side < source_side,
        )
    if target_prefix:
        prefix = table[:, :1] if class_slot and table.dim() == 3 else grid.new_zeros(1, 1, grid.shape[-1])
        grid = torch.cat([prefix, grid], dim=1)
    return grid


def _resize_rel_pos(table: torch.Tensor, length: int) -> torch.Tensor:
    """A relative-position table L x C resized (linear, as segment-anything's ``get_rel_pos``) to ``length``."""
    if table.shape[0] == length:
        return table
    resized = F.interpolate(table.t().unsqueeze(0).float(), size=length, mode="linear")
    return resized[0].t().to(table.dtype)


def timm_block_key(key: str, reverse: bool = False) -> str:
    """A timm ViT tensor name (MAE's, and the published side network's) under the side
    network's segment-anything names: ``mlp.fc1/fc2`` become ``mlp.lin1/lin2`` (``reverse``:
    the other way)."""
    pairs = ((".mlp.fc1.", ".mlp.lin1."), (".mlp.fc2.", ".mlp.lin2."))
    for timm, sam in pairs:
        key = key.replace(sam, timm) if reverse else key.replace(timm, sam)
    return key


def remap_mae(state: Mapping[str, torch.Tensor], side: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """MAE / timm ViT names -> the side network's; returns (mapped, unused keys).

    ``mlp.fc1/fc2`` become ``mlp.lin1/lin2``; ``pos_embed`` (1 x 1+n*n x C) is kept as it is
    when the side network stores MAE's layout (the paper setting) and fitted to its table
    otherwise; ``cls_token``, the final ``norm`` and any MAE decoder weights are unused.
    """
    target = side.state_dict()
    mapped: dict[str, torch.Tensor] = {}
    unused: list[str] = []
    for key, value in state.items():
        if key in ("cls_token", "mask_token") or key.startswith(("norm.", "decoder_", "head.", "fc_norm.")):
            unused.append(key)
        elif key == "pos_embed":
            class_slot = value.shape[1] != math.isqrt(value.shape[1]) ** 2
            mapped["pos_embed"] = fit_position_table(value, class_slot, target["pos_embed"])
        else:
            mapped[timm_block_key(key)] = value
    return mapped, unused


def remap_sam(state: Mapping[str, torch.Tensor], side: nn.Module) -> tuple[dict[str, torch.Tensor], list[str]]:
    """SAM checkpoint -> the side network; returns (mapped, unused keys).

    Keeps ``image_encoder.*`` without the prefix, drops the neck and the prompt encoder and
    mask decoder, fits ``pos_embed`` (1 x 64 x 64 x C) to the side network's table and each relative-position table to
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
            value = fit_position_table(value, False, target[name])
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
        raise OptionError(
            "side_init",
            f"{init}: {source.name} is a ViT with width {source.width}, depth {source.depth}, patch "
            f"{source.patch_size}; this setting's side network has width {settings.width}, depth {settings.depth}, "
            f"patch {settings.patch_size} (use setting paper or base, or --side_init none)",
        )
    raw, where = _fetch_side_checkpoint(init, weights)
    state = raw.get("model", raw) if isinstance(raw, dict) else raw
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OptionError("side_weights", f"{where} holds no state dict of tensors")
    mapped, unused = (remap_mae if init == "mae" else remap_sam)(state, side)
    try:
        result = side.load_state_dict(mapped, strict=False)
    except RuntimeError as error:
        raise OptionError(
            "side_weights", f"{where} does not fit the side network for --side_init {init}: {error}"
        ) from None
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
