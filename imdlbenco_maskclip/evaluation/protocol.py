"""The OpenSDI protocol: one pass per test split, Benco's metrics on the protocol's image sets.

The figures are the rows of ``METRICS``: one entry each (key, title, Benco evaluator or compute
function, population) drives the per-image records, the per-split rows, the mean row, the
intervals and the columns of every output. Localization: pixel F1, IoU, AUC and accuracy at
0.5, per image by Benco's ``PixelF1``/``PixelIOU``/``PixelAUC``/``PixelAccuracy``, averaged over
partial fakes only: the images the published test counts, whose key contains ``partial`` and
``fake`` (authentic images would score 0 and whole-image fakes have nothing to localize). A
split none of whose keys starts with ``partial/`` or ``entire/`` (Benco Tp/Gt or JSON data)
counts its fakes with a mask that is not white everywhere instead. A partial fake whose mask is
empty at the evaluated size (a tiny edit lost in the resize) is counted (``n_empty_mask``) and
left out of pixel AUC, where Benco's evaluator would score it 0. Detection: Benco's
``ImageF1``, ``ImageAccuracy`` at 0.5 and ``ImageAUC`` over all images, where the model gives
``pred_label``, with the fakes caught at 5% false positives (``tpr_at_fpr5``) and the
calibration error (``ece``). Real photos: the share called fake (``real_fpr``) and the mean
share of their pixels predicted edited (``real_area``). Every image is seen exactly once,
also under torchrun (each rank takes a strided share and the records are gathered), and the
count behind each figure is reported.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from imdlbenco_maskclip.evaluation import calibration, detection_figures
from imdlbenco_maskclip.host.runtime import Runtime
from imdlbenco_maskclip.inference.forward import forward

PARTIAL_FAKES = "partial fakes"
REAL_IMAGES = "real images"
ALL_IMAGES = "all images"
POPULATIONS = {PARTIAL_FAKES: "n_pixel", ALL_IMAGES: "n_images", REAL_IMAGES: "n_real"}
"""Each population, in table order, and the count of its images."""


@dataclass(frozen=True)
class Metric:
    """One figure of the protocol table: its key (records, JSON, CSV), its column title, how it
    is computed and over which images.

    A figure over ``PARTIAL_FAKES`` or ``REAL_IMAGES`` is a mean over those images of a value per
    image: Benco's pixel ``evaluator`` (a class in ``IMDLBenCo.evaluation``) at threshold 0.5,
    or ``compute(record)`` (None: no value for that image). A figure over ``ALL_IMAGES`` is
    computed once from the split's fake probabilities and labels: ``compute(p, y, weights)``
    gives it for each row of image weights (``detection_figures``), which is what the bootstrap
    resamples; Benco's ``evaluator``, when given, computes the table's figure itself.
    ``skip_empty_masks``: a partial fake whose mask is empty at the evaluated size has no value.
    ``paper``: where the paper's leaderboard holds the same figure, as ``(table, key)`` of
    ``resources/opensdi_leaderboard.json`` (None: not reported)."""

    name: str
    title: str
    evaluator: str | None
    population: str
    compute: Callable[..., Any] | None = None
    higher_is_better: bool = True
    paper: tuple[str, str] | None = None
    skip_empty_masks: bool = False

    @property
    def per_image(self) -> bool:
        """Whether the figure is a mean of per-image values (else: computed over the split)."""
        return self.population != ALL_IMAGES

    def benco_evaluator(self) -> Any:
        import IMDLBenCo.evaluation

        return getattr(IMDLBenCo.evaluation, self.evaluator)

    def image_value(self, record: ImageRecord) -> float | None:
        """A per-image figure's value for one image of its population."""
        return self.compute(record) if self.compute is not None else record.pixel.get(self.name)


def called_fake(record: ImageRecord) -> float | None:
    """1 when the image's fake probability is at least 0.5, else 0 (None without one)."""
    return None if record.pred_label is None else float(record.pred_label >= 0.5)


def predicted_area(record: ImageRecord) -> float | None:
    """The share of the image's pixels (inside the image, when padded) predicted above 0.5."""
    return record.pred_area


METRICS = (
    Metric("pixel_f1", "pixel F1", "PixelF1", PARTIAL_FAKES, paper=("localization", "f1")),
    Metric("pixel_iou", "pixel IoU", "PixelIOU", PARTIAL_FAKES, paper=("localization", "iou")),
    Metric("pixel_auc", "pixel AUC", "PixelAUC", PARTIAL_FAKES, skip_empty_masks=True),
    Metric("pixel_acc", "pixel acc", "PixelAccuracy", PARTIAL_FAKES),
    Metric("image_f1", "image F1", "ImageF1", ALL_IMAGES, detection_figures.f1, paper=("detection", "f1")),
    Metric(
        "image_acc", "image acc", "ImageAccuracy", ALL_IMAGES, detection_figures.accuracy, paper=("detection", "acc")
    ),
    Metric("image_auc", "image AUC", "ImageAUC", ALL_IMAGES, detection_figures.auc),
    Metric("tpr_at_fpr5", "TPR at 5% FPR", None, ALL_IMAGES, detection_figures.tpr_at_fpr),
    Metric("ece", "ECE", None, ALL_IMAGES, calibration.ece, higher_is_better=False),
    Metric("real_fpr", "real FPR", None, REAL_IMAGES, called_fake, higher_is_better=False),
    Metric("real_area", "real area", None, REAL_IMAGES, predicted_area, higher_is_better=False),
)
COUNTS = ("n_pixel", "n_images", "n_real", "n_fake", "n_empty_mask")
THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
"""Where each fake's pixel F1 is also computed (0.05 to 0.95), for the F1-against-threshold
curve of the report and the threshold chosen on validation; 0.5 is among them, so the curve
passes through the table's figure."""


def f1_at_threshold(threshold: float) -> Metric:
    """Pixel F1 over the partial fakes at ``threshold`` (one of ``THRESHOLDS``), read from each
    image's F1 curve (the run must have asked for curves): ``benco test``'s figure at the
    checkpoint's validation threshold."""
    index = THRESHOLDS.index(threshold)
    return Metric(
        "pixel_f1_at_val_threshold",
        f"pixel F1 at {threshold:g}",
        None,
        PARTIAL_FAKES,
        lambda record: record.f1_by_threshold[index] if record.f1_by_threshold else None,
    )


def metric_named(name: str) -> Metric:
    """The entry of ``METRICS`` called ``name``."""
    return next(m for m in METRICS if m.name == name)


def pixel_metrics() -> tuple[Metric, ...]:
    """The metrics computed per partial fake, in ``METRICS`` order."""
    return tuple(m for m in METRICS if m.population == PARTIAL_FAKES)


@dataclass
class ImageRecord:
    """One test image's outcome. ``index``: its position in the split's dataset;
    ``masked_fake``: fake with a mask that is not white everywhere; ``partial``: counted for
    localization (see ``mark_partial_fakes``); ``pixel``: each Benco pixel metric's value for an
    image of its population (None where it is not finite, or skipped for an empty mask);
    ``f1_by_threshold``: a fake's pixel F1 at each of ``THRESHOLDS`` when the run asked for
    curves (else, for real images and for models without a mask: empty); ``empty_mask``: a fake
    whose mask has no edited pixel at the evaluated size; ``pred_area``: the share of its pixels
    predicted above 0.5 (None for a model without a mask)."""

    split: str
    index: int
    name: str
    label: int
    masked_fake: bool
    partial: bool
    pred_label: float | None
    pixel: dict[str, float | None] = field(default_factory=dict)
    f1_by_threshold: tuple[float | None, ...] = ()
    empty_mask: bool = False
    pred_area: float | None = None


@dataclass
class SplitScores:
    """One row of the protocol table: each figure's value (None where it does not apply, read
    as ``row.pixel_f1``), the number of images behind the figures and, once the bootstrap has
    run, each figure's 95% interval (``ci95``: name -> (low, high), None where it has none)."""

    split: str
    scores: dict[str, float | None]
    n_pixel: int
    n_images: int
    n_real: int
    n_fake: int
    n_empty_mask: int = 0
    ci95: dict[str, tuple[float, float] | None] = field(default_factory=dict)

    def __getattr__(self, name: str) -> float | None:
        scores = self.__dict__.get("scores", {})
        if name in scores:
            return scores[name]
        raise AttributeError(name)

    def as_dict(self) -> dict[str, Any]:
        """``split``, every metric in ``METRICS`` order, any other figure, the counts, then the
        intervals (``ci95``) when there are any."""
        named = {m.name for m in METRICS}
        row = {
            "split": self.split,
            **{m.name: self.scores.get(m.name) for m in METRICS},
            **{k: v for k, v in self.scores.items() if k not in named},
            **{count: getattr(self, count) for count in COUNTS},
        }
        if self.ci95:
            row["ci95"] = {k: None if v is None else list(v) for k, v in self.ci95.items()}
        return row


@dataclass
class ProtocolResult:
    """Per-split rows, their mean, the per-image records behind them, the figures scored
    beyond ``METRICS`` (``extra``: pixel F1 at ``val_threshold``, the checkpoint's threshold
    chosen on validation) and where the data came from (``fingerprints``: split -> its files,
    see ``host.datasets.fingerprint``)."""

    rows: list[SplitScores]
    mean: SplitScores
    records: list[ImageRecord] = field(repr=False)
    extra: tuple[Metric, ...] = ()
    fingerprints: dict[str, dict[str, Any]] = field(default_factory=dict)
    val_threshold: float | None = None

    @property
    def metrics(self) -> tuple[Metric, ...]:
        """Every figure of the rows: ``METRICS`` and the extra ones."""
        return (*METRICS, *self.extra)

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
    inside = torch.ones_like(mask) if shape_mask is None else shape_mask
    empty = fake & ((mask * inside).flatten(1).sum(1) == 0).cpu()
    pixel: list[dict[str, float | None]] = [{} for _ in range(len(label))]
    per_threshold: list[tuple[float | None, ...]] = [() for _ in range(len(label))]
    areas: list[float | None] = [None] * len(label)
    pred_mask = output.get("pred_mask")
    if pred_mask is not None:
        above = (pred_mask.detach().float() > 0.5).float() * inside
        areas = (above.flatten(1).sum(1) / inside.flatten(1).sum(1).clamp_min(1)).cpu().tolist()
    for population, chosen in ((PARTIAL_FAKES, fake), (REAL_IMAGES, ~fake)):
        evaluated = [m for m in METRICS if m.population == population and m.evaluator is not None]
        if pred_mask is None or not evaluated or not bool(chosen.any()):
            continue
        sel = chosen.nonzero().flatten()
        rows = sel.tolist()
        on_device = sel.to(pred_mask.device)
        pm, gt = pred_mask.detach().float()[on_device], mask[on_device]
        sm = None if shape_mask is None else shape_mask[on_device]
        for metric in evaluated:
            values = _values(metric.benco_evaluator()(threshold=0.5).batch_update(pm, gt, sm))
            for j, i in enumerate(rows):
                pixel[i][metric.name] = None if metric.skip_empty_masks and bool(empty[i]) else values[j]
        if curves and population == PARTIAL_FAKES:
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
            bool(empty[i]),
            areas[i],
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


def threshold_curve(records: Sequence[ImageRecord]) -> list[float | None]:
    """Mean pixel F1 over the partial fakes at each of ``THRESHOLDS`` (None where no image
    has a finite value); the records must come from a run with curves."""
    curves = [r.f1_by_threshold for r in records if r.partial and r.f1_by_threshold]
    means: list[float | None] = []
    for i in range(len(THRESHOLDS)):
        values = [c[i] for c in curves if c[i] is not None]
        means.append(float(np.mean(values)) if values else None)
    return means


def best_threshold(records: Sequence[ImageRecord]) -> float | None:
    """The one of ``THRESHOLDS`` where mean pixel F1 over the partial fakes is highest (of equal
    ones, the nearest to 0.5, then the higher); None without curves."""
    candidates = [(v, -abs(t - 0.5), t) for t, v in zip(THRESHOLDS, threshold_curve(records)) if v is not None]
    return max(candidates)[2] if candidates else None


def population(records: Sequence[ImageRecord], name: str) -> list[ImageRecord]:
    """The records a figure over population ``name`` averages or counts: the partial fakes the
    model gave a mask for, the real images, or all images."""
    if name == PARTIAL_FAKES:
        return [r for r in records if r.partial and r.pixel]
    if name == REAL_IMAGES:
        return [r for r in records if r.label == 0]
    return list(records)


def figure(metric: Metric, records: Sequence[ImageRecord]) -> float | None:
    """One figure of one split's (gathered, marked) records; None where it does not apply."""
    if metric.per_image:
        values = [v for r in population(records, metric.population) if (v := metric.image_value(r)) is not None]
        return float(np.mean(values)) if values else None
    if not records or any(r.pred_label is None for r in records):
        return None
    if metric.evaluator is not None:
        predictions = torch.tensor([r.pred_label for r in records])
        labels = torch.tensor([float(r.label) for r in records])
        return _image_metric(metric.benco_evaluator(), predictions, labels)
    p = np.array([r.pred_label for r in records], dtype=np.float64)
    y = np.array([r.label for r in records], dtype=np.float64)
    value = float(metric.compute(p, y, np.ones((1, len(records))))[0])
    return value if np.isfinite(value) else None


def score_split(split: str, records: Sequence[ImageRecord], metrics: Sequence[Metric] | None = None) -> SplitScores:
    """Each of ``metrics`` (default ``METRICS``) over its population of one split's (gathered,
    marked) records."""
    partial = population(records, PARTIAL_FAKES)
    n_fake = sum(r.label for r in records)
    return SplitScores(
        split,
        {metric.name: figure(metric, records) for metric in metrics or METRICS},
        len(partial),
        len(records),
        len(records) - n_fake,
        n_fake,
        sum(r.empty_mask for r in partial),
    )


def mean_row(rows: Iterable[SplitScores]) -> SplitScores:
    """The unweighted mean of each figure over the splits that have it; counts are summed."""
    rows = list(rows)
    scores = {}
    for name in dict.fromkeys(key for r in rows for key in r.scores):
        values = [r.scores.get(name) for r in rows if r.scores.get(name) is not None]
        scores[name] = float(np.mean(values)) if values else None
    return SplitScores("mean", scores, *(sum(getattr(r, count) for r in rows) for count in COUNTS))


def at_val_threshold(result: ProtocolResult, threshold: float) -> ProtocolResult:
    """``result`` with pixel F1 at the validation ``threshold`` scored on every split and in the
    mean (an ``extra`` figure); the run must have asked for curves."""
    metric = f1_at_threshold(threshold)
    rows = [
        replace(
            row, scores={**row.scores, metric.name: figure(metric, [r for r in result.records if r.split == row.split])}
        )
        for row in result.rows
    ]
    return replace(result, rows=rows, mean=mean_row(rows), extra=(*result.extra, metric), val_threshold=threshold)


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
