"""Predict masks and fake probabilities for image files, folders and OpenSDI shards.

Images go through Benco's own test-time transform (resize or pad to the run's size, ImageNet
normalization), so a checkpoint sees exactly what it saw in ``benco test``. Masks come back
at each image's original size.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from imdlbenco_maskclip import pictures
from imdlbenco_maskclip.atomic import write_text
from imdlbenco_maskclip.errors import UserError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class InputImage:
    """One image to predict: a display name, where it came from, and how to decode it."""

    name: str
    source: str
    load: Callable[[], Image.Image]


def _file_input(path: Path, name: str) -> InputImage:
    def load() -> Image.Image:
        with Image.open(path) as image:
            return image.convert("RGB")

    return InputImage(name, str(path), load)


def _shard_inputs(paths: Sequence[Path]) -> Iterator[InputImage]:
    from dataset_adapters.shards import iter_shard_images

    for key, shard, load in iter_shard_images([str(p) for p in paths]):
        yield InputImage(key, shard, load)


def collect_inputs(entries: Sequence[str]) -> list[InputImage]:
    """Image files, folders (searched recursively; a folder of parquet shards reads as shards),
    and parquet shard files, in the order given, each folder sorted."""
    inputs: list[InputImage] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_file() and path.suffix.lower() == ".parquet":
            inputs.extend(_shard_inputs([path]))
        elif path.is_file():
            inputs.append(_file_input(path, path.name))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            shards = [p for p in files if p.suffix.lower() == ".parquet"]
            inputs.extend(_shard_inputs(shards) if shards else [])
            inputs.extend(_file_input(p, str(p.relative_to(path))) for p in files if p.suffix.lower() in IMAGE_SUFFIXES)
        else:
            raise UserError(f"INPUTS: no image, folder or shard at {entry}")
    if not inputs:
        raise UserError(f"INPUTS: no images found in {', '.join(entries)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and .parquet)")
    return inputs


class _Images(Dataset):
    def __init__(self, inputs: Sequence[InputImage], image_size: int, padding: bool) -> None:
        from IMDLBenCo.transforms import get_albu_transforms

        self.inputs = inputs
        self.transform = get_albu_transforms("pad" if padding else "resize", output_size=(image_size, image_size))

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, np.ndarray, int]:
        item = self.inputs[index]
        try:
            image = item.load()
        except (OSError, ValueError) as error:
            raise UserError(f"cannot decode {item.name} ({item.source}): {error}") from None
        pixels = np.asarray(image)
        return self.transform(image=pixels)["image"], pixels, index


def _collate(batch: list) -> tuple[torch.Tensor, list[np.ndarray], list[int]]:
    return torch.stack([b[0] for b in batch]), [b[1] for b in batch], [b[2] for b in batch]


def safe_name(name: str) -> str:
    """A flat file stem for a name that may hold folders (shard keys do)."""
    stem = re.sub(r"\.[^./]*$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]+", "__", stem).strip("_") or "image"


def _unique(stem: str, used: set[str]) -> str:
    candidate, n = stem, 1
    while candidate in used:
        candidate, n = f"{stem}-{n}", n + 1
    used.add(candidate)
    return candidate


def _benco_batch(images: torch.Tensor, originals: list[np.ndarray], names: list[str], padding: bool) -> dict:
    """A batch shaped like a Benco dataset's, with empty targets, so that models which always
    compute their loss (most of Benco's) run too."""
    batch_size, _, height, width = images.shape
    empty = images.new_zeros(batch_size, 1, height, width)
    origin = torch.tensor([o.shape[:2] for o in originals])
    batch = {
        "image": images, "mask": empty, "edge_mask": empty, "label": torch.zeros(batch_size, dtype=torch.long, device=images.device),
        "shape": origin if padding else torch.tensor([[height, width]] * batch_size), "origin_shape": origin, "name": names,
    }
    if padding:
        shape_mask = empty.clone()
        for i, (h, w) in enumerate(origin.tolist()):
            shape_mask[i, :, :h, :w] = 1
        batch["shape_mask"] = shape_mask
    return batch


def predict(
    model: torch.nn.Module,
    inputs: Sequence[InputImage],
    output_dir: Path,
    image_size: int,
    padding: bool,
    device: torch.device,
    batch_size: int = 8,
    num_workers: int = 0,
) -> list[dict]:
    """Write ``masks/*.png``, ``overlays/*.png`` and ``predictions.{csv,json}``; return the rows."""
    loader = DataLoader(_Images(inputs, image_size, padding), batch_size=batch_size, num_workers=num_workers, collate_fn=_collate)
    rows: list[dict] = []
    stems: set[str] = set()
    model.eval()
    with torch.no_grad():
        for images, originals, indices in tqdm(loader, desc="predict", unit="batch"):
            output = model(**_benco_batch(images.to(device), originals, [inputs[i].name for i in indices], padding))
            masks = output.get("pred_mask")
            labels = output.get("pred_label")
            for j, index in enumerate(indices):
                item, original = inputs[index], originals[j]
                height, width = original.shape[:2]
                row = {"name": item.name, "source": item.source, "width": width, "height": height}
                row["fake_probability"] = None if labels is None else float(labels.flatten()[j])
                if masks is not None:
                    mask = masks[j : j + 1].float()
                    if padding:
                        mask = mask[..., :height, :width]
                    else:
                        mask = F.interpolate(mask, size=(height, width), mode="bilinear", align_corners=False)
                    probability = mask[0, 0].clamp(0, 1).cpu().numpy()
                    stem = _unique(safe_name(item.name), stems)
                    pictures.save_png(pictures.probability_png(probability), output_dir / "masks" / f"{stem}.png")
                    pictures.save_png(pictures.overlay(Image.fromarray(original), probability), output_dir / "overlays" / f"{stem}.png")
                    row["manipulated_fraction"] = float((probability > 0.5).mean())
                    row["mask"] = f"masks/{stem}.png"
                rows.append(row)
    _write_tables(rows, output_dir)
    return rows


def _write_tables(rows: list[dict], output_dir: Path) -> None:
    fields = ["name", "source", "width", "height", "fake_probability", "manipulated_fraction", "mask"]
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=fields)
    writer.writeheader()
    writer.writerows({k: row.get(k) for k in fields} for row in rows)
    write_text(output_dir / "predictions.csv", table.getvalue())
    write_text(output_dir / "predictions.json", json.dumps(rows, indent=1) + "\n")
