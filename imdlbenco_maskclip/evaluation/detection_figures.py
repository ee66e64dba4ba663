"""The detection figures of a split for many weightings of its images at once.

Each function takes the split's fake probabilities ``p`` and labels ``y`` (1 = fake), and a
matrix of image weights ``w``: row b says how many times each image counts in bootstrap
resample b, and a row of ones is the split itself. One call gives the figure for every row,
with no loop over resamples. ``accuracy``, ``f1`` and ``auc`` are what Benco's
``ImageAccuracy``, ``ImageF1`` (fake when p > 0.5; its 1e-9 terms) and ``ImageAUC``
(scikit-learn's ROC AUC, ties counting half) give on the weighted sample; ``tpr_at_fpr`` is the
share of fakes whose probability is strictly above the reals' 95th percentile, that percentile
computed as ``numpy.percentile`` computes it (linear interpolation) on the weighted sample. A
figure that a row cannot have (a class with no weight) is NaN there.
"""

from __future__ import annotations

import numpy as np

THRESHOLD = 0.5
EPSILON = 1e-9  # Benco's ImageF1 adds it to every denominator


def _called_fake(p: np.ndarray) -> np.ndarray:
    return (p > THRESHOLD).astype(np.float64)


def accuracy(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Share of images called right at 0.5, per row of ``w``."""
    correct = (_called_fake(p) == y).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (w @ correct) / w.sum(axis=1)


def f1(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """F1 of calling an image fake at 0.5, per row of ``w``."""
    called, fake = _called_fake(p), y.astype(np.float64)
    tp, fp, fn = w @ (called * fake), w @ (called * (1 - fake)), w @ ((1 - called) * fake)
    precision, recall = tp / (tp + fp + EPSILON), tp / (tp + fn + EPSILON)
    return 2 * precision * recall / (precision + recall + EPSILON)


def _sorted_reals(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The reals' probabilities in increasing order and the cumulative weight of each row up to
    and including each of them (B x reals)."""
    real = y == 0
    order = np.argsort(p[real], kind="stable")
    return p[real][order], np.cumsum(w[:, real][:, order], axis=1)


def auc(p: np.ndarray, y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """ROC AUC of the fake probability per row of ``w``: the weighted share of (fake, real)
    pairs where the fake scores higher, ties counting half."""
    fake = y == 1
    if not fake.any() or fake.all():
        return np.full(len(w), np.nan)
    reals, cumulative = _sorted_reals(p, y, w)
    cumulative = np.concatenate([np.zeros((len(w), 1)), cumulative], axis=1)
    below = cumulative[:, np.searchsorted(reals, p[fake], side="left")]
    up_to = cumulative[:, np.searchsorted(reals, p[fake], side="right")]
    wins = (w[:, fake] * (below + 0.5 * (up_to - below))).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return wins / (w[:, fake].sum(axis=1) * cumulative[:, -1])


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's own linear interpolation (its rounding included, so the point figure equals
    ``numpy.percentile``'s)."""
    difference = b - a
    return np.where(t >= 0.5, b - difference * (1 - t), a + difference * t)


def percentile_of_reals(p: np.ndarray, y: np.ndarray, w: np.ndarray, q: float) -> np.ndarray:
    """``numpy.percentile(reals, q)`` of each row's weighted sample of the reals (integer
    weights: each real repeated as often as its weight); NaN for a row without reals."""
    reals, cumulative = _sorted_reals(p, y, w)
    if not reals.size:
        return np.full(len(w), np.nan)
    total = cumulative[:, -1]
    virtual = (total - 1) * (q / 100)
    previous = np.floor(virtual)
    following = np.minimum(previous + 1, total - 1)
    gamma = virtual - previous

    def order_statistic(k: np.ndarray) -> np.ndarray:
        position = (cumulative <= k[:, None]).sum(axis=1)  # the first real whose cumulative weight exceeds k
        return reals[np.minimum(position, reals.size - 1)]

    value = _lerp(order_statistic(previous), order_statistic(following), gamma)
    return np.where(total > 0, value, np.nan)


def tpr_at_fpr(p: np.ndarray, y: np.ndarray, w: np.ndarray, percentile: float = 95) -> np.ndarray:
    """Share of fakes whose probability exceeds the reals' ``percentile``-th percentile: with 95,
    the fakes caught when at most 5% of the reals may be flagged."""
    fake = y == 1
    threshold = percentile_of_reals(p, y, w, percentile)
    caught = (p[fake][None, :] > threshold[:, None]).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        value = (w[:, fake] * caught).sum(axis=1) / w[:, fake].sum(axis=1)
    return np.where(np.isnan(threshold), np.nan, value)
