"""The OpenSDI protocol: one pass per test split, Benco's metrics on the protocol's image sets.

Localization: pixel F1 and IoU at 0.5, per image by Benco's ``PixelF1``/``PixelIOU``, averaged
over partial fakes only, the images the published test counts: those whose key contains
``partial`` and ``fake`` (authentic images would score 0 and whole-image fakes have nothing to
localize). A split none of whose keys starts with ``partial/`` or ``entire/`` (Benco Tp/Gt or
JSON data) counts its fakes with a mask that is not white everywhere instead. Detection: Benco's ``ImageF1``,
``ImageAccuracy`` at 0.5 and ``ImageAUC`` over all images, where the model gives
``pred_label``. Every image is seen exactly once, also under torchrun (each rank takes a
strided share and the records are gathered), and the count behind each figure is reported.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from imdlbenco_maskclip.distributed import Runtime


@dataclass
class ImageRecord:
    """One test image's outcome. ``masked_fake``: fake with a mask that is not white
    everywhere; ``partial``: counted for localization (see ``mark_partial_fakes``)."""

    split: str
    name: str
    label: int
    masked_fake: bool
    partial: bool
    pred_label: float | None
    pixel_f1: float | None
    pixel_iou: float | None


@dataclass
class SplitScores:
    """One row of the protocol table; None where a figure does not apply."""

    split: str
    pixel_f1: float | None
    pixel_iou: float | None
    n_pixel: int
    image_f1: float | None
    image_acc: float | None
    image_auc: float | None
    n_images: int
    n_real: int
    n_fake: int


@dataclass
class ProtocolResult:
    """Per-split rows, their mean, and the per-image records behind them."""

    rows: list[SplitScores]
    mean: SplitScores
    records: list[ImageRecord] = field(repr=False)

    def as_dict(self) -> dict:
        return {"splits": [asdict(r) for r in self.rows], "mean": asdict(self.mean)}


def masked_fakes(mask: torch.Tensor, label: torch.Tensor, shape_mask: torch.Tensor | None) -> torch.Tensor:
    """Which samples of a batch are fakes whose mask is not white everywhere."""
    valid = torch.ones_like(mask) if shape_mask is None else shape_mask
    white_everywhere = ((mask * valid).flatten(1).sum(1) >= valid.flatten(1).sum(1))
    return (label.flatten() == 1) & ~white_everywhere


def is_partial_key(name: str) -> bool:
    """The published test's localization set: keys that contain ``partial`` and ``fake``."""
    return "partial" in name and "fake" in name


def mark_partial_fakes(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """The records of one split with ``partial`` set: by key where any key of the split starts
    with OpenSDI's ``partial/``/``entire/`` prefix, else (no such keys) the fakes with a mask."""
    keyed = any(r.name.startswith(("partial/", "entire/")) for r in records)
    return [replace(r, partial=is_partial_key(r.name) if keyed else r.masked_fake) for r in records]


def _batch_records(split: str, batch: dict, output: dict) -> list[ImageRecord]:
    from IMDLBenCo.evaluation import PixelF1, PixelIOU

    mask = batch["mask"].float().cpu()
    label = torch.as_tensor(batch["label"]).flatten().cpu()
    shape_mask = None if batch.get("shape_mask") is None else batch["shape_mask"].float().cpu()
    masked = masked_fakes(mask, label, shape_mask)
    fake = label == 1
    f1: list[float | None] = [None] * len(label)
    iou: list[float | None] = [None] * len(label)
    pred_mask = output.get("pred_mask")
    if pred_mask is not None and bool(fake.any()):
        sel = fake.nonzero().flatten()
        pm, gt = pred_mask.detach().float().cpu()[sel], mask[sel]
        sm = None if shape_mask is None else shape_mask[sel]
        f1_sel = PixelF1(threshold=0.5).batch_update(pm, gt, sm).tolist()
        iou_sel = PixelIOU(threshold=0.5).batch_update(pm, gt, sm).tolist()
        for j, i in enumerate(sel.tolist()):
            f1[i], iou[i] = f1_sel[j], iou_sel[j]
    pred_label = output.get("pred_label")
    probabilities = [None] * len(label) if pred_label is None else pred_label.detach().float().flatten().cpu().tolist()
    return [
        ImageRecord(split, str(batch["name"][i]), int(label[i]), bool(masked[i]), False, probabilities[i], f1[i], iou[i])
        for i in range(len(label))
    ]


def run_split(
    model: torch.nn.Module,
    split: str,
    dataset: Dataset,
    runtime: Runtime,
    batch_size: int,
    num_workers: int,
    autocast: torch.dtype | None = None,
) -> list[ImageRecord]:
    """Predict every image of one split (this rank's share of it) and record the outcome."""
    share = Subset(dataset, range(runtime.rank, len(dataset), runtime.world_size)) if runtime.distributed else dataset
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False)
    amp = (
        torch.autocast(device_type=runtime.device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    records: list[ImageRecord] = []
    model.eval()
    with torch.no_grad(), amp:
        for batch in tqdm(loader, desc=f"test {split}", unit="batch", disable=not runtime.is_main):
            batch = {k: v.to(runtime.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            batch.setdefault("edge_mask", torch.zeros_like(batch["mask"]))  # models that always compute their loss
            records.extend(_batch_records(split, batch, model(**batch)))
    return records


def gather(records: list[ImageRecord], runtime: Runtime) -> list[ImageRecord]:
    if not runtime.distributed:
        return records
    everything: list[list[ImageRecord] | None] = [None] * runtime.world_size
    dist.all_gather_object(everything, records)
    return [record for part in everything for record in (part or [])]


def _image_metric(evaluator_cls: type, predictions: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Benco's image evaluator on already gathered tensors (its 'remain' path gathers nothing)."""
    evaluator = evaluator_cls()
    evaluator.remain_update(predictions, labels)
    try:
        value = float(evaluator.epoch_update())
    except ValueError:  # AUC with a single class present (older scikit-learn raises)
        return None
    return value if np.isfinite(value) else None


def score_split(split: str, records: Sequence[ImageRecord]) -> SplitScores:
    from IMDLBenCo.evaluation import ImageAccuracy, ImageAUC, ImageF1

    pixel = [r for r in records if r.partial and r.pixel_f1 is not None]
    labels = torch.tensor([float(r.label) for r in records])
    image_scores: list[float | None] = [None, None, None]
    if records and all(r.pred_label is not None for r in records):
        predictions = torch.tensor([r.pred_label for r in records])
        image_scores = [_image_metric(cls, predictions, labels) for cls in (ImageF1, ImageAccuracy, ImageAUC)]
    n_fake = int(labels.sum().item())
    return SplitScores(
        split=split,
        pixel_f1=float(np.mean([r.pixel_f1 for r in pixel])) if pixel else None,
        pixel_iou=float(np.mean([r.pixel_iou for r in pixel])) if pixel else None,
        n_pixel=len(pixel),
        image_f1=image_scores[0],
        image_acc=image_scores[1],
        image_auc=image_scores[2],
        n_images=len(records),
        n_real=len(records) - n_fake,
        n_fake=n_fake,
    )


def mean_row(rows: Iterable[SplitScores]) -> SplitScores:
    """The unweighted mean of each figure over the splits that have it; counts are summed."""
    rows = list(rows)

    def mean(attr: str) -> float | None:
        values = [getattr(r, attr) for r in rows if getattr(r, attr) is not None]
        return float(np.mean(values)) if values else None

    return SplitScores(
        "mean", mean("pixel_f1"), mean("pixel_iou"), sum(r.n_pixel for r in rows),
        mean("image_f1"), mean("image_acc"), mean("image_auc"),
        sum(r.n_images for r in rows), sum(r.n_real for r in rows), sum(r.n_fake for r in rows),
    )


def evaluate(
    model: torch.nn.Module,
    datasets: dict[str, Dataset],
    runtime: Runtime,
    batch_size: int,
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
) -> ProtocolResult:
    """The protocol over ``datasets`` (one per table row)."""
    rows, records = [], []
    for split, dataset in datasets.items():
        split_records = gather(run_split(model, split, dataset, runtime, batch_size, num_workers, autocast), runtime)
        split_records = mark_partial_fakes(split_records)
        rows.append(score_split(split, split_records))
        records.extend(split_records)
    return ProtocolResult(rows, mean_row(rows), records)
