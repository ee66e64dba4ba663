"""``per_image.csv``: one line per test image, written by ``benco test`` beside its tables and
read back by ``benco compare`` to pair runs image by image.

Columns: ``split``, ``name``, ``label`` (1 = fake), ``partial_fake`` (counted for localization),
``pred_label`` (the fake probability), each per-image Benco figure of ``METRICS`` (pixel F1,
IoU, AUC, accuracy at 0.5; empty where it does not apply), ``empty_mask`` (a fake whose mask
has no edited pixel at the evaluated size), ``pred_area`` (share of the image's pixels
predicted above 0.5), then any extra per-image figure of the run (pixel F1 at the validation
threshold). Numbers are written in full (``repr``), so every figure of the table can be
recomputed from this file alone. Files written before ``empty_mask`` and ``pred_area`` existed
read with none empty and no area.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path

from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.evaluation import protocol
from imdlbenco_maskclip.evaluation.protocol import ImageRecord, Metric

FILE_NAME = "per_image.csv"


def _benco_columns() -> list[str]:
    return [m.name for m in protocol.METRICS if m.per_image and m.evaluator is not None]


def write(records: Sequence[ImageRecord], path: Path, extra: Sequence[Metric] = ()) -> Path:
    """``records`` (and each extra per-image figure) as ``path``, atomically."""
    extra = [m for m in extra if m.per_image]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    benco = _benco_columns()
    writer.writerow(
        [
            "split",
            "name",
            "label",
            "partial_fake",
            "pred_label",
            *benco,
            "empty_mask",
            "pred_area",
            *(m.name for m in extra),
        ]
    )
    for r in records:
        writer.writerow(
            [
                r.split,
                r.name,
                r.label,
                int(r.partial),
                r.pred_label,
                *(r.pixel.get(name) for name in benco),
                int(r.empty_mask),
                r.pred_area,
                *(m.image_value(r) if r.partial else None for m in extra),
            ]
        )
    write_text(path, buffer.getvalue())
    return path


def _number(text: str, path: Path, line: int, column: str) -> float | None:
    if text == "":
        return None
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}: line {line}: '{column}' must be a number or empty, got {text!r}") from None
    return value if math.isfinite(value) else None


def read(path: Path) -> dict[str, list[ImageRecord]]:
    """The records of ``path`` by split, in file order; errors name the file and line."""
    try:
        with open(path, newline="", encoding="utf-8") as handle:
            lines = list(csv.DictReader(handle))
            header = lines[0].keys() if lines else []
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise UserError(f"{path}: cannot read it as per_image.csv: {error}") from None
    missing = [c for c in ("split", "name", "label", "partial_fake", "pred_label") if c not in header]
    if lines and missing:
        raise UserError(f"{path}: not a per_image.csv of benco test (no column {', '.join(missing)})")
    benco = [c for c in _benco_columns() if c in header]
    splits: dict[str, list[ImageRecord]] = {}
    for number, line in enumerate(lines, 2):
        label = _number(line["label"], path, number, "label")
        if label not in (0, 1):
            raise UserError(f"{path}: line {number}: 'label' must be 0 or 1, got {line['label']!r}")
        pixel = {c: _number(line[c], path, number, c) for c in benco} if label == 1 else {}
        records = splits.setdefault(line["split"], [])
        records.append(
            ImageRecord(
                line["split"],
                len(records),
                line["name"],
                int(label),
                bool(label),
                line["partial_fake"] == "1",
                _number(line["pred_label"], path, number, "pred_label"),
                pixel if any(v is not None for v in pixel.values()) else {},  # a fake the model gave a mask
                empty_mask=line.get("empty_mask") == "1",
                pred_area=_number(line.get("pred_area") or "", path, number, "pred_area"),
            )
        )
    return splits
