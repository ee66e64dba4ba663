"""``benco predict``: masks, overlays and fake probabilities for image files, folders and shards.

A thin layer over ``Predictor``: it collects the inputs, writes each mask and overlay at the
image's original size, and one table row per input. An input that cannot be read (not an image,
truncated, too many pixels) gets a row with the reason and a warning; the run goes on.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import re
from collections.abc import Iterator, Sequence
from pathlib import Path

from tqdm import tqdm

from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.predictor import NamedImage, Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
FIELDS = ["name", "source", "width", "height", "fake_probability", "manipulated_fraction", "mask", "precision", "error"]

log = logging.getLogger(__name__)


def _shard_inputs(paths: Sequence[Path]) -> Iterator[NamedImage]:
    from dataset_adapters.rows import iter_shard_images

    for key, shard, load in iter_shard_images([str(p) for p in paths]):
        yield NamedImage(key, shard, load)


def collect_inputs(entries: Sequence[str]) -> list[NamedImage]:
    """Image files, folders (searched recursively; a folder of parquet shards reads as shards),
    and parquet shard files, in the order given, each folder sorted."""
    inputs: list[NamedImage] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_file() and path.suffix.lower() == ".parquet":
            inputs.extend(_shard_inputs([path]))
        elif path.is_file():
            inputs.append(NamedImage(path.name, str(path)))
        elif path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            shards = [p for p in files if p.suffix.lower() == ".parquet"]
            inputs.extend(_shard_inputs(shards) if shards else [])
            inputs.extend(
                NamedImage(str(p.relative_to(path)), str(p)) for p in files if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            raise UserError(f"INPUTS: no image, folder or shard at {entry}")
    if not inputs:
        raise UserError(
            f"INPUTS: no images found in {', '.join(entries)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and .parquet)"
        )
    return inputs


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


def predict(
    predictor: Predictor, inputs: Sequence[NamedImage], output_dir: Path, batch_size: int = 8, num_workers: int = 0
) -> list[dict]:
    """Write ``masks/*.png``, ``overlays/*.png`` and ``predictions.{csv,json}``; return the rows
    (one per input, in order; an unreadable input's row has its ``error``)."""
    rows: list[dict] = []
    stems: set[str] = set()
    results = predictor.predict_many(inputs, batch_size=batch_size, num_workers=num_workers, skip_unreadable=True)
    try:
        for item, result in zip(inputs, tqdm(results, total=len(inputs), desc="predict", unit="image")):
            row: dict = {"name": item.name, "source": item.source}
            if result.error is not None:
                log.warning("skipped %s: %s", item.name, result.error)
                rows.append({**row, "error": result.error})
                continue
            row.update(
                width=result.image.width,
                height=result.image.height,
                fake_probability=result.fake_probability,
                precision=predictor.precision,
            )
            if result.mask is not None:
                stem = _unique(safe_name(item.name), stems)
                pictures.save_png(result.mask_image(), output_dir / "masks" / f"{stem}.png")
                pictures.save_png(result.overlay(), output_dir / "overlays" / f"{stem}.png")
                row.update(manipulated_fraction=float((result.mask > 0.5).mean()), mask=f"masks/{stem}.png")
            rows.append(row)
    finally:  # an interrupted run still leaves the table of what it did
        _write_tables(rows, output_dir)
    return rows


def _write_tables(rows: list[dict], output_dir: Path) -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: row.get(k) for k in FIELDS} for row in rows)
    write_text(output_dir / "predictions.csv", table.getvalue())
    write_text(output_dir / "predictions.json", json.dumps(rows, indent=1) + "\n")
