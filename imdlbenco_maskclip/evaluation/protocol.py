"""The OpenSDI protocol: one pass per test split, Benco's metrics on the protocol's image sets.

The figures are the rows of ``METRICS``: one entry each (key, title, Benco evaluator,
population) drives the per-image records, the per-split rows, the mean row and the columns of
every output. Localization: pixel F1, IoU, AUC and accuracy at 0.5, per image by Benco's
``PixelF1``/``PixelIOU``/``PixelAUC``/``PixelAccuracy``, averaged over partial fakes only:
the images the published test counts, whose key contains ``partial`` and ``fake`` (authentic
images would score 0 and whole-image fakes have nothing to localize). A split none of whose
keys starts with ``partial/`` or ``entire/`` (Benco Tp/Gt or JSON data) counts its fakes with
a mask that is not white everywhere instead. Detection: Benco's ``ImageF1``,
``ImageAccuracy`` at 0.5 and ``ImageAUC`` over all images, where the model gives
``pred_label``. Every image is seen exactly once, also under torchrun (each rank takes a
strided share and the records are gathered), and the count behind each figure is reported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from imdlbenco_maskclip.host.runtime import Runtime
from imdlbenco_maskclip.inference.forward import forward

PARTIAL_FAKES = "partial fakes"
ALL_IMAGES = "all images"


@dataclass(frozen=True)
class Metric:
    """One figure of the protocol table: its key (records, JSON, CSV), its column title, the
    Benco evaluator (a class in ``IMDLBenCo.evaluation``) and the images it is computed over:
    ``PARTIAL_FAKES``, per image at threshold 0.5 and averaged, or ``ALL_IMAGES``, once over
    the split's fake probabilities. ``paper``: where the paper's leaderboard holds the same
    figure, as ``(table, key)`` of ``resources/opensdi_leaderboard.json`` (None: not reported)."""

    name: str
    title: str
    evaluator: str
    population: str
    higher_is_better: bool = True
    paper: tuple[str, str] | None = None

    def benco_evaluator(self) -> Any:
        import IMDLBenCo.evaluation

        return getattr(IMDLBenCo.evaluation, self.evaluator)


METRICS = (
    Metric("pixel_f1", "pixel F1", "PixelF1", PARTIAL_FAKES, paper=("localization", "f1")),
    Metric("pixel_iou", "pixel IoU", "PixelIOU", PARTIAL_FAKES, paper=("localization", "iou")),
    Metric("pixel_auc", "pixel AUC", "PixelAUC", PARTIAL_FAKES),
    Metric("pixel_acc", "pixel acc", "PixelAccuracy", PARTIAL_FAKES),
    Metric("image_f1", "image F1", "ImageF1", ALL_IMAGES, paper=("detection", "f1")),
    Metric("image_acc", "image acc", "ImageAccuracy", ALL_IMAGES, paper=("detection", "acc")),
    Metric("image_auc", "image AUC", "ImageAUC", ALL_IMAGES),
)
COUNTS = ("n_pixel", "n_images", "n_real", "n_fake")
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Where each fake's pixel F1 is also computed (0.05 to 0.95), for the F1-against-threshold
curve of the report; 0.5 is among them, so the curve passes through the table's figure."""


def metric_named(name: str) -> Metric:
    """The entry of ``METRICS`` called ``name``."""
    return next(m for m in METRICS if m.name == name)


def pixel_metrics() -> tuple[Metric, ...]:
    """The metrics computed per partial fake, in ``METRICS`` order."""
    return tuple(m for m in METRICS if m.population == PARTIAL_FAKES)


def image_metrics() -> tuple[Metric, ...]:
    """The metrics computed over all images of a split, in ``METRICS`` order."""
    return tuple(m for m in METRICS if m.population == ALL_IMAGES)


@dataclass
class ImageRecord:
    """One test image's outcome. ``index``: its position in the split's dataset;
    ``masked_fake``: fake with a mask that is not white everywhere; ``partial``: counted for
    localization (see ``mark_partial_fakes``); ``pixel``: each pixel metric's value for a fake
    image (None where it is not finite); ``f1_by_threshold``: a fake's pixel F1 at each of
    ``THRESHOLDS`` when the run asked for curves (else, for real images and for models
    without a mask: empty)."""

    split: str
    index: int
    name: str
    label: int
    masked_fake: bool
    partial: bool
    pred_label: float | None
    pixel: dict[str, float | None] = field(default_factory=dict)
    f1_by_threshold: tuple[float | None, ...] = ()


@dataclass
class SplitScores:
    """One row of the protocol table: each metric's value (None where it does not apply, read
    as ``row.pixel_f1``) and the number of images behind the figures."""

    split: str
    scores: dict[str, float | None]
    n_pixel: int
    n_images: int
    n_real: int
    n_fake: int

    def __getattr__(self, name: str) -> float | None:
        scores = self.__dict__.get("scores", {})
        if name in scores:
            return scores[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """``split``, every metric in ``METRICS`` order, then the counts."""
        return {
            "split": self.split,
            **{m.name: self.scores.get(m.name) for m in METRICS},
            **{count: getattr(self, count) for count in COUNTS},
        }


@dataclass
class ProtocolResult:
    """Per-split rows, their mean, and the per-image records behind them."""

    rows: list[SplitScores]
    mean: SplitScores
    records: list[ImageRecord] = field(repr=False)

    def as_dict(self) -> dict:
        return {"splits": [r.as_dict() for r in self.rows], "mean": self.mean.as_dict()}


def masked_fakes(mask: torch.Tensor, label: torch.Tensor, shape_mask: torch.Tensor | None) -> torch.Tensor:
    """Which samples of a batch are fakes whose mask is not white everywhere."""
    valid = torch.ones_like(mask) if shape_mask is None else shape_mask
    white_everywhere = (mask * valid).flatten(1).sum(1) >= valid.flatten(1).sum(1)
    return (label.flatten() == 1) & ~white_everywhere


def is_partial_key(name: str) -> bool:
    """The published test's localization set: keys that contain ``partial`` and ``fake``."""
    return "partial" in name and "fake" in name


def mark_partial_fakes(records: Sequence[ImageRecord]) -> list[ImageRecord]:
    """The records of one split with ``partial`` set: by key where any key of the split starts
    with OpenSDI's ``partial/``/``entire/`` prefix, else (no such keys) the fakes with a mask."""
    keyed = any(r.name.startswith(("partial/", "entire/")) for r in records)
    return [replace(r, partial=is_partial_key(r.name) if keyed else r.masked_fake) for r in records]


def _values(per_image: torch.Tensor) -> list[float | None]:
    """A Benco pixel evaluator's per-image values as floats, None where not finite."""
    return [value if np.isfinite(value) else None for value in torch.as_tensor(per_image, dtype=torch.float64).tolist()]


def _batch_records(split: str, indices: Sequence[int], batch: dict, output: dict, curves: bool) -> list[ImageRecord]:
    """The batch's records (with ``curves``, each fake's F1 at every threshold too); the pixel
    metrics run where the prediction is (the GPU in a GPU run), and only their per-image
    values come back."""
    mask = batch["mask"].float()
    label = torch.as_tensor(batch["label"]).flatten().cpu()
    shape_mask = None if batch.get("shape_mask") is None else batch["shape_mask"].float()
    masked = masked_fakes(mask, label.to(mask.device), shape_mask).cpu()
    fake = label == 1
    pixel: list[dict[str, float | None]] = [{} for _ in range(len(label))]
    per_threshold: list[tuple[float | None, ...]] = [() for _ in range(len(label))]
    pred_mask = output.get("pred_mask")
    if pred_mask is not None and bool(fake.any()):
        sel = fake.nonzero().flatten()
        rows = sel.tolist()
        on_device = sel.to(pred_mask.device)
        pm, gt = pred_mask.detach().float()[on_device], mask[on_device]
        sm = None if shape_mask is None else shape_mask[on_device]
        for metric in pixel_metrics():
            values = _values(metric.benco_evaluator()(threshold=0.5).batch_update(pm, gt, sm))
            for j, i in enumerate(rows):
                pixel[i][metric.name] = values[j]
        if curves:
            f1 = metric_named("pixel_f1").benco_evaluator()
            by_threshold = [_values(f1(threshold=t).batch_update(pm, gt, sm)) for t in THRESHOLDS]
            for j, i in enumerate(rows):
                per_threshold[i] = tuple(values[j] for values in by_threshold)
    pred_label = output.get("pred_label")
    probabilities = [None] * len(label) if pred_label is None else pred_label.detach().float().flatten().cpu().tolist()
    return [
        ImageRecord(
            split,
            indices[i],
            str(batch["name"][i]),
            int(label[i]),
            bool(masked[i]),
            False,
            probabilities[i],
            pixel[i],
            per_threshold[i],
        )
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
    progress: bool = True,
    curves: bool = False,
) -> list[ImageRecord]:
    """Predict every image of one split (this rank's share of it) and record the outcome;
    ``progress`` shows a bar on the main process; ``curves`` records each fake's pixel F1 at
    every one of ``THRESHOLDS`` (for the report; 19 more evaluations per batch)."""
    indices = range(runtime.rank, len(dataset), runtime.world_size) if runtime.distributed else range(len(dataset))
    share = Subset(dataset, indices) if runtime.distributed else dataset
    loader = DataLoader(share, batch_size=batch_size, shuffle=False, num_workers=num_workers, drop_last=False)
    amp = (
        torch.autocast(device_type=runtime.device.type, dtype=autocast)
        if autocast is not None
        else contextlib.nullcontext()
    )
    records: list[ImageRecord] = []
    with amp:
        for batch in tqdm(loader, desc=f"test {split}", unit="batch", disable=not (progress and runtime.is_main)):
            batch = {k: v.to(runtime.device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            done = len(records)
            batch_indices = indices[done : done + len(batch["name"])]
            records.extend(_batch_records(split, batch_indices, batch, forward(model, batch), curves))
    return records


def gather(records: list[ImageRecord], runtime: Runtime) -> list[ImageRecord]:
    if not runtime.distributed:
        return records
    everything: list[list[ImageRecord] | None] = [None] * runtime.world_size
    dist.all_gather_object(everything, records)
    return [record for part in everything for record in (part or [])]


def _image_metric(evaluator_cls: type, predictions: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Benco's image evaluator on already gathered tensors (its 'remain' path gathers nothing)."""
    from sklearn.exceptions import UndefinedMetricWarning

    evaluator = evaluator_cls()
    evaluator.remain_update(predictions, labels)
    try:
        with warnings.catch_warnings():  # AUC of a single class: undefined, reported as None
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            value = float(evaluator.epoch_update())
    except ValueError:  # AUC with a single class present (older scikit-learn raises)
        return None
    return value if np.isfinite(value) else None


def score_split(split: str, records: Sequence[ImageRecord]) -> SplitScores:
    """Each metric over its population of one split's (gathered, marked) records."""
    partial = [r for r in records if r.partial and r.pixel]
    scores: dict[str, float | None] = {}
    for metric in pixel_metrics():
        values = [r.pixel[metric.name] for r in partial if r.pixel.get(metric.name) is not None]
        scores[metric.name] = float(np.mean(values)) if values else None
    labels = torch.tensor([float(r.label) for r in records])
    has_labels = bool(records) and all(r.pred_label is not None for r in records)
    predictions = torch.tensor([r.pred_label for r in records]) if has_labels else None
    for metric in image_metrics():
        scores[metric.name] = _image_metric(metric.benco_evaluator(), predictions, labels) if has_labels else None
    n_fake = int(labels.sum().item())
    return SplitScores(split, scores, len(partial), len(records), len(records) - n_fake, n_fake)


def mean_row(rows: Iterable[SplitScores]) -> SplitScores:
    """The unweighted mean of each figure over the splits that have it; counts are summed."""
    rows = list(rows)
    scores = {}
    for metric in METRICS:
        values = [r.scores.get(metric.name) for r in rows if r.scores.get(metric.name) is not None]
        scores[metric.name] = float(np.mean(values)) if values else None
    return SplitScores("mean", scores, *(sum(getattr(r, count) for r in rows) for count in COUNTS))


def evaluate(
    model: torch.nn.Module,
    datasets: dict[str, Dataset],
    runtime: Runtime,
    batch_size: int,
    num_workers: int = 0,
    autocast: torch.dtype | None = None,
    progress: bool = True,
    curves: bool = False,
) -> ProtocolResult:
    """The protocol over ``datasets`` (one per table row); ``curves``: see ``run_split``."""
    rows, records = [], []
    for split, dataset in datasets.items():
        split_records = run_split(model, split, dataset, runtime, batch_size, num_workers, autocast, progress, curves)
        split_records = gather(split_records, runtime)
        split_records = mark_partial_fakes(split_records)
        rows.append(score_split(split, split_records))
        records.extend(split_records)
    return ProtocolResult(rows, mean_row(rows), records)
