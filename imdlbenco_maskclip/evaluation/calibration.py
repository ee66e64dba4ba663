"""Calibration of the fake probability: the expected calibration error and the reliability
diagram's bins.

The probability is cut into ``BINS`` equal-width bins, [0, 1/15), ..., [14/15, 1]. ECE is the
sum over bins of (images in the bin / all images) x |share of fakes in the bin - mean
probability in the bin|, which is |sum over the bin of (label - probability)| / all images;
lower is better. ``ece`` takes a matrix of image weights like ``detection_figures``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 15
EDGES = np.arange(BINS + 1) / BINS


def bin_of(p: np.ndarray) -> np.ndarray:
    """Each probability's bin, 0..BINS-1 (1.0 falls in the last)."""
    return np.clip(np.searchsorted(EDGES, p, side="right") - 1, 0, BINS - 1)


def ece(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Expected calibration error per row of image weights ``w`` (a row of ones: the split)."""
    members = np.zeros((len(p), BINS))
    members[np.arange(len(p)), bin_of(p)] = 1.0
    gap = w @ (members * (y - p)[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(gap).sum(axis=1) / w.sum(axis=1)


@dataclass(frozen=True)
class ReliabilityBin:
    """One bin of the reliability diagram: its bounds, its images, their mean probability and
    the share of them that are fake."""

    low: float
    high: float
    images: int
    mean_probability: float
    fake_share: float


def reliability(p: np.ndarray, y: np.ndarray) -> list[ReliabilityBin]:
    """The non-empty bins of one split."""
    bins = bin_of(p)
    return [
        ReliabilityBin(
            float(EDGES[b]), float(EDGES[b + 1]), int(n), float(p[bins == b].mean()), float(y[bins == b].mean())
        )
        for b, n in enumerate(np.bincount(bins, minlength=BINS))
        if n
    ]
