"""Pictures people would rather look at than read: mask PNGs, overlays and example grids."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image, ImageDraw

from imdlbenco_maskclip.common.atomic import atomic_path

if TYPE_CHECKING:
    import torch

OVERLAY_COLOR = np.array([255, 40, 40], dtype=np.float32)


def probability_png(probability: np.ndarray) -> Image.Image:
    """A HxW probability map in [0, 1] as an 8-bit grayscale image (white = manipulated)."""
    return Image.fromarray(np.clip(probability * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")


def dataset_image(image: torch.Tensor) -> Image.Image:
    """A 3xHxW image as a Benco dataset gives it (ImageNet-normalized) back as the RGB picture."""
    from IMDLBenCo.datasets import denormalize

    return Image.fromarray((denormalize(image).clamp(0, 1) * 255).byte().permute(1, 2, 0).numpy())


def overlay(image: Image.Image, probability: np.ndarray, threshold: float = 0.5, alpha: float = 0.5) -> Image.Image:
    """The image with the pixels predicted manipulated (above ``threshold``) tinted red."""
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    hit = (probability > threshold)[..., None]
    tinted = np.where(hit, (1 - alpha) * rgb + alpha * OVERLAY_COLOR, rgb)
    return Image.fromarray(tinted.astype(np.uint8), mode="RGB")


def save_png(picture: Image.Image, path: Path, compress_level: int = 6) -> None:
    """Write a PNG atomically, so an interrupted run never leaves a truncated picture;
    ``compress_level``: zlib's, 6 as Pillow's default, lower is faster and larger."""
    with atomic_path(path) as temporary:
        picture.save(temporary, format="PNG", compress_level=compress_level)


def grid(
    rows: Sequence[Sequence[Image.Image]], titles: Sequence[str], labels: Sequence[str] = (), cell: int = 160
) -> Image.Image:
    """Pictures in a table, one column per title, each scaled to ``cell`` pixels square; a row's
    label (if any) is written on its first picture."""
    header = 18
    sheet = Image.new("RGB", (cell * len(titles), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for column, title in enumerate(titles):
        draw.text((column * cell + 4, 3), title, fill="black")
    for r, row in enumerate(rows):
        for column, picture in enumerate(row):
            sheet.paste(picture.convert("RGB").resize((cell, cell), Image.NEAREST), (column * cell, header + r * cell))
        if r < len(labels):
            draw.rectangle((0, header + r * cell, 7 * len(labels[r]) + 6, header + r * cell + 14), fill="white")
            draw.text((3, header + r * cell + 2), labels[r], fill="black")
    return sheet
