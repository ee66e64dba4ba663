"""Percentile-bootstrap 95% intervals of the protocol's figures, and paired differences.

Each resample redraws a split's images with replacement: its partial fakes for the figures
over partial fakes, its real and its fake images separately (within each label, so every
resample keeps the split's class balance) for the figures over real images and over all
images. A resample is a matrix of counts (how often each image is drawn), and every figure is
computed for a block of resamples at once: per-image figures as weighted means (a matrix
product), the others by their ``compute`` (``detection_figures``, ``calibration``). The mean
row's resample b averages resample b of every split, each split resampled independently. The
interval is the 2.5th and 97.5th percentiles of the resampled figures.

The draws come from ``numpy``'s generator seeded with the run's seed and the split's name, so
a split's interval depends on neither the other splits nor their order. A paired comparison
draws once, on the reference run's images, and scores both runs on the same draw.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from imdlbenco_maskclip.evaluation.protocol import (
    PARTIAL_FAKES,
    ImageRecord,
    Metric,
    ProtocolResult,
    SplitScores,
)

LEVEL = 95
CELLS_PER_BLOCK = 2_000_000
"""Resamples are scored in blocks of about this many (resample, image) cells, so memory stays
a few tens of MB whatever the split's size."""


@dataclass(frozen=True)
class Settings:
    """``resamples`` per split (0: no intervals) and the ``seed`` of the draws."""

    resamples: int = 1000
    seed: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"resamples": self.resamples, "seed": self.seed, "level": LEVEL}


def generator(seed: int, split: str) -> np.random.Generator:
    """The draws of one split: seeded by the run's ``seed`` and the split's name."""
    return np.random.default_rng([seed, zlib.crc32(split.encode("utf-8"))])


class SplitArrays:
    """One split's records as arrays: labels, fake probabilities (NaN where absent), the
    positions of its partial fakes, and each per-image figure's values (NaN where an image has
    none or is outside the figure's population)."""

    def __init__(self, records: Sequence[ImageRecord], metrics: Sequence[Metric]) -> None:
        self.size = len(records)
        self.labels = np.array([r.label for r in records], dtype=np.float64)
        self.probabilities = np.array(
            [np.nan if r.pred_label is None else r.pred_label for r in records], dtype=np.float64
        )
        self.partial = np.flatnonzero([r.partial for r in records])
        self.reals = np.flatnonzero(self.labels == 0)
        self.fakes = np.flatnonzero(self.labels == 1)
        self.values: dict[str, np.ndarray] = {}
        for metric in (m for m in metrics if m.per_image):
            chosen = self.partial if metric.population == PARTIAL_FAKES else self.reals
            column = np.full(self.size, np.nan)
            for i in chosen:
                value = metric.image_value(records[i])
                if value is not None and (metric.population != PARTIAL_FAKES or records[i].pixel):
                    column[i] = value
            self.values[metric.name] = column

    def ones(self) -> tuple[np.ndarray, np.ndarray]:
        """The split itself as one 'resample': (image weights, partial-fake weights)."""
        images = np.ones((1, self.size))
        partial = np.zeros((1, self.size))
        partial[:, self.partial] = 1.0
        return images, partial

    def draw(self, rng: np.random.Generator, count: int) -> tuple[np.ndarray, np.ndarray]:
        """``count`` resamples: (image weights, reals and fakes each redrawn within their label;
        partial-fake weights, the partial fakes redrawn), each ``count`` x images."""
        images = np.zeros((count, self.size))
        for members in (self.reals, self.fakes):
            images[:, members] = _counts(rng, count, len(members))
        partial = np.zeros((count, self.size))
        partial[:, self.partial] = _counts(rng, count, len(self.partial))
        return images, partial

    def figures(self, metrics: Sequence[Metric], images: np.ndarray, partial: np.ndarray) -> dict[str, np.ndarray]:
        """Each figure for every row of the weights (NaN where a row cannot have it, and for a
        figure over all images that has no ``compute``)."""
        out = {}
        for metric in metrics:
            if metric.per_image:
                values = self.values[metric.name]
                weights = partial if metric.population == PARTIAL_FAKES else images
                present = np.isfinite(values)
                with np.errstate(invalid="ignore", divide="ignore"):
                    out[metric.name] = (weights @ np.where(present, values, 0.0)) / (weights @ present)
            elif metric.compute is not None and self.size and not np.isnan(self.probabilities).any():
                out[metric.name] = metric.compute(self.probabilities, self.labels, images)
            else:
                out[metric.name] = np.full(len(images), np.nan)
        return out

    def population_size(self, metric: Metric) -> int:
        """How many images a figure's resamples redraw."""
        if metric.population == PARTIAL_FAKES:
            return len(self.partial)
        return len(self.reals) if metric.per_image else self.size


def _counts(rng: np.random.Generator, count: int, size: int) -> np.ndarray:
    """``count`` x ``size``: how often each of ``size`` items is drawn in each of ``count``
    draws of ``size`` items with replacement."""
    if size == 0:
        return np.zeros((count, 0))
    drawn = rng.integers(0, size, size=(count, size)) + size * np.arange(count)[:, None]
    return np.bincount(drawn.ravel(), minlength=count * size).reshape(count, size).astype(np.float64)


def resample(
    arrays: Sequence[SplitArrays], metrics: Sequence[Metric], settings: Settings, split: str
) -> list[dict[str, np.ndarray]]:
    """Each figure on each of ``settings.resamples`` resamples of one split, for each entry of
    ``arrays``: the draws are made on the first entry and scored on every entry (a run and the
    same images of another run, aligned, for a paired comparison)."""
    rng = generator(settings.seed, split)
    per_block = max(1, CELLS_PER_BLOCK // max(arrays[0].size, 1))
    blocks: list[list[dict[str, np.ndarray]]] = []
    for start in range(0, settings.resamples, per_block):
        images, partial = arrays[0].draw(rng, min(per_block, settings.resamples - start))
        blocks.append([entry.figures(metrics, images, partial) for entry in arrays])
    return [
        {m.name: np.concatenate([block[k][m.name] for block in blocks]) for m in metrics} for k in range(len(arrays))
    ]


def _mean_over_splits(per_split: Sequence[np.ndarray]) -> np.ndarray:
    """Resample b of the mean row: the mean of the splits' resample b (those that have it)."""
    stacked = np.vstack(per_split)
    present = np.isfinite(stacked)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(present, stacked, 0.0).sum(axis=0) / present.sum(axis=0)


def interval(values: np.ndarray) -> tuple[float, float] | None:
    """The percentile interval of resampled figures; None when no resample has the figure."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return None
    low, high = np.percentile(finite, [(100 - LEVEL) / 2, 100 - (100 - LEVEL) / 2])
    return float(low), float(high)


def with_intervals(result: ProtocolResult, settings: Settings) -> ProtocolResult:
    """``result`` with the 95% interval of each figure of every row and of the mean row
    (``ci95``; None for a figure the row lacks); unchanged with 0 resamples."""
    if settings.resamples <= 0:
        return result
    metrics = result.metrics
    rows: list[SplitScores] = []
    resamples: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    for row in result.rows:
        records = [r for r in result.records if r.split == row.split]
        (values,) = resample([SplitArrays(records, metrics)], metrics, settings, row.split)
        ci95 = {}
        for metric in metrics:
            present = row.scores.get(metric.name) is not None
            ci95[metric.name] = interval(values[metric.name]) if present else None
            if present:
                resamples[metric.name].append(values[metric.name])
        rows.append(replace(row, ci95=ci95))
    mean_ci95 = {m.name: interval(_mean_over_splits(resamples[m.name])) if resamples[m.name] else None for m in metrics}
    return replace(result, rows=rows, mean=replace(result.mean, ci95=mean_ci95))


@dataclass(frozen=True)
class Difference:
    """One figure of one run minus the reference's on the same images (a split, or ``mean``),
    with its paired-bootstrap 95% interval and the number of images redrawn (``n``)."""

    split: str
    metric: str
    difference: float | None
    ci95: tuple[float, float] | None
    n: int

    @property
    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly above or below 0."""
        return self.ci95 is not None and (self.ci95[0] > 0 or self.ci95[1] < 0)


def paired_differences(
    pairs: dict[str, tuple[Sequence[ImageRecord], Sequence[ImageRecord]]],
    metrics: Sequence[Metric],
    settings: Settings,
) -> list[Difference]:
    """Per split of ``pairs`` (split -> (reference's records, the other run's records for the
    same images, in the same order)) and for their mean: each figure's difference, other minus
    reference, with its interval; the mean's resample b averages the splits' resample b."""
    found: list[Difference] = []
    resamples: dict[str, list[np.ndarray]] = {m.name: [] for m in metrics}
    points: dict[str, list[float]] = {m.name: [] for m in metrics}
    sizes: dict[str, int] = dict.fromkeys((m.name for m in metrics), 0)
    for split, (reference, other) in pairs.items():
        arrays = [SplitArrays(reference, metrics), SplitArrays(other, metrics)]
        base, twin = (entry.figures(metrics, *entry.ones()) for entry in arrays)
        drawn = resample(arrays, metrics, settings, split) if settings.resamples > 0 else None
        for metric in metrics:
            name, n = metric.name, arrays[0].population_size(metric)
            point = float(twin[name][0] - base[name][0])
            if not np.isfinite(point):
                found.append(Difference(split, name, None, None, n))
                continue
            ci95 = None
            if drawn is not None:
                differences = drawn[1][name] - drawn[0][name]
                ci95 = interval(differences)
                resamples[name].append(differences)
            points[name].append(point)
            sizes[name] += n
            found.append(Difference(split, name, point, ci95, n))
    for metric in metrics:
        name = metric.name
        point = float(np.mean(points[name])) if points[name] else None
        ci95 = interval(_mean_over_splits(resamples[name])) if resamples[name] else None
        found.append(Difference("mean", name, point, ci95, sizes[name]))
    return found
