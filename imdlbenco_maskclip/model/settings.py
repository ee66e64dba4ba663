"""MaskCLIP settings as data, and the registry of side-network weight sources.

A setting fixes every dimension of the network; ``MaskCLIP(setting)`` builds it with random
weights and ``build_maskclip`` adds pretrained ones. CLIP weights come from open_clip's own
pretrained registry (a tag such as ``openai``) or a file; the side network's MAE and SAM
weights come from the sources in ``SIDE_SOURCES``.

``paper`` is the published network (OpenSDI's ``MaskCLIP('ViTL')``), parameter for parameter.
The other settings say how they differ from it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import open_clip

from imdlbenco_maskclip.common.errors import OptionError


@dataclass(frozen=True)
class ClipSettings:
    """The frozen CLIP: an open_clip model config and where its taps are read.

    ``model`` names an open_clip config (the tiny setting's is ``maskclip-tiny-clip``, shipped
    in ``clip_configs/`` and registered with ``open_clip.add_model_config``). ``pretrained`` is
    the default weight source (an open_clip tag or ``none``); ``quick_gelu`` the activation the
    weights were trained with. ``tap_blocks`` are the residual blocks whose ``ln_2`` output is
    read.
    """

    model: str
    pretrained: str
    quick_gelu: bool
    tap_blocks: tuple[int, ...]
    tokenizer: str


@dataclass(frozen=True)
class SideSettings:
    """The trainable side ViT in segment-anything's ViTDet form (windowed + global blocks).

    ``grid`` is the token grid the relative positions of the global blocks are sized for.
    The absolute position table is stored for ``pos_grid`` x ``pos_grid`` tokens, with a
    class slot first when ``pos_class_slot`` (MAE's own 1 x 197 x 768 layout), and resized
    to the actual token grid in every forward.
    """

    width: int
    depth: int
    heads: int
    patch_size: int
    window_size: int
    global_blocks: tuple[int, ...]
    grid: int
    pos_grid: int
    pos_class_slot: bool
    mlp_ratio: float
    drop_path: float
    init: str


@dataclass(frozen=True)
class MaskCLIPSettings:
    """One named shape of MaskCLIP.

    Side block ``fuse_after[i]`` is followed by a fusion with CLIP tap ``i``. The decoder
    works at ``decoder_dim`` channels; the prompts are ``n_ctx`` learned vectors each.
    ``input_size`` is the image side the side network's position table is stored for
    (other multiples of its patch size work through interpolation).
    """

    clip: ClipSettings
    side: SideSettings
    fuse_after: tuple[int, ...]
    fusion_heads: int
    decoder_dim: int
    decoder_heads: int
    head_heads: int
    n_ctx: int
    dropout: float

    @property
    def input_size(self) -> int:
        return self.side.grid * self.side.patch_size

    @property
    def prompt_template(self) -> str:
        return " ".join(["X"] * self.n_ctx) + " an image."


VIT_B_SIDE = SideSettings(
    width=768,
    depth=12,
    heads=12,
    patch_size=16,
    window_size=14,
    global_blocks=(2, 5, 8, 11),
    grid=32,
    pos_grid=14,
    pos_class_slot=True,
    mlp_ratio=4.0,
    drop_path=0.1,
    init="mae",
)

CLIP_CONFIGS = Path(__file__).resolve().parent / "clip_configs"
open_clip.add_model_config(CLIP_CONFIGS)

# The published shape: CLIP ViT-L/14 (OpenAI) taps into a ViT-B/16 side network at 512.
PAPER = MaskCLIPSettings(
    clip=ClipSettings(
        model="ViT-L-14",
        pretrained="openai",
        quick_gelu=True,
        tap_blocks=(2, 4, 8, 12, 16, 20, 23),
        tokenizer="ViT-L-14",
    ),
    side=VIT_B_SIDE,
    fuse_after=(1, 2, 3, 4, 5, 6, 7),
    fusion_heads=8,
    decoder_dim=256,
    decoder_heads=8,
    head_heads=8,
    n_ctx=10,
    dropout=0.1,
)

SETTINGS: dict[str, MaskCLIPSettings] = {
    "paper": PAPER,
    # Ours: the side network starts from SAM's ViT-B image encoder instead of MAE; its position
    # table is SAM's 64 x 64 one resized once, at load, to the 32 x 32 grid (no class slot).
    "paper_sam": replace(PAPER, side=replace(VIT_B_SIDE, init="sam", pos_grid=32, pos_class_slot=False)),
    # Ours: the same side network and heads on CLIP ViT-B/16 (OpenAI), for 24 GB GPUs.
    "base": replace(
        PAPER,
        clip=replace(PAPER.clip, model="ViT-B-16", tap_blocks=(1, 2, 4, 6, 8, 10, 11), tokenizer="ViT-B-16"),
    ),
    # Small widths, random weights, nothing to download: tests and the CPU demo (64-128 px).
    "tiny": MaskCLIPSettings(
        clip=ClipSettings(
            model="maskclip-tiny-clip",
            pretrained="none",
            quick_gelu=False,
            tap_blocks=(0, 1, 2, 3),
            tokenizer="ViT-B-16",
        ),
        side=SideSettings(
            width=96,
            depth=4,
            heads=3,
            patch_size=16,
            window_size=4,
            global_blocks=(1, 3),
            grid=8,
            pos_grid=4,
            pos_class_slot=True,
            mlp_ratio=2.0,
            drop_path=0.0,
            init="none",
        ),
        fuse_after=(0, 1, 2, 3),
        fusion_heads=2,
        decoder_dim=32,
        decoder_heads=2,
        head_heads=2,
        n_ctx=4,
        dropout=0.1,
    ),
}


@dataclass(frozen=True)
class WeightSource:
    """A published checkpoint for the side network: file name, URL and the ViT it fits."""

    name: str
    file_name: str
    url: str
    width: int
    depth: int
    patch_size: int


SIDE_SOURCES: dict[str, WeightSource] = {
    "mae": WeightSource(
        name="MAE ViT-B/16 (ImageNet-1k self-supervised)",
        file_name="mae_pretrain_vit_base.pth",
        url="https://dl.fbaipublicfiles.com/mae/pretrain/mae_pretrain_vit_base.pth",
        width=768,
        depth=12,
        patch_size=16,
    ),
    "sam": WeightSource(
        name="SAM ViT-B image encoder",
        file_name="sam_vit_b_01ec64.pth",
        url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
        width=768,
        depth=12,
        patch_size=16,
    ),
}

SIDE_INITS = ("none", *SIDE_SOURCES)


def get_setting(name: str | MaskCLIPSettings) -> MaskCLIPSettings:
    """The named setting (a ``MaskCLIPSettings`` passes through); an unknown name is an
    ``OptionError`` listing the known ones."""
    if isinstance(name, MaskCLIPSettings):
        return name
    try:
        return SETTINGS[name]
    except KeyError:
        raise OptionError("setting", f"unknown MaskCLIP setting '{name}' (choose from {', '.join(SETTINGS)})") from None
