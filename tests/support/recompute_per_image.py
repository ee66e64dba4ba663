"""Recompute ``benco test``'s figures and their 95% intervals from ``per_image.csv`` alone.

Independent of the package on purpose (numpy and scipy only, a plain loop over resamples,
index draws instead of count matrices), so that a test can hold the package's numbers against
it. Usage::

    python tests/support/recompute_per_image.py per_image.csv --resamples 2000 --seed 1

prints JSON: per split and for ``mean``, each figure and its interval (``ci95``).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import defaultdict

import numpy as np
from scipy.stats import rankdata

PIXEL = ("pixel_f1", "pixel_iou", "pixel_auc", "pixel_acc")


def number(text: str) -> float:
    return float(text) if text not in ("", None) else float("nan")


def read(path: str) -> dict[str, dict[str, np.ndarray]]:
    columns: dict[str, dict[str, list]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as handle:
        for line in csv.DictReader(handle):
            split = columns[line["split"]]
            split["label"].append(int(line["label"]))
            split["partial"].append(line["partial_fake"] == "1")
            split["p"].append(number(line["pred_label"]))
            split["area"].append(number(line["pred_area"]))
            for name in PIXEL:
                split[name].append(number(line[name]))
    return {s: {k: np.array(v) for k, v in c.items()} for s, c in columns.items()}


def auc(p: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney: (sum of the fakes' ranks - the smallest possible) / (fakes x reals)."""
    ranks = rankdata(p)
    fakes, reals = int(y.sum()), int((1 - y).sum())
    return (ranks[y == 1].sum() - fakes * (fakes + 1) / 2) / (fakes * reals)


def ece(p: np.ndarray, y: np.ndarray) -> float:
    total = 0.0
    for k in range(15):
        inside = (p >= k / 15) & ((p < (k + 1) / 15) if k < 14 else (p <= 1))
        if inside.any():
            total += inside.sum() / len(p) * abs(y[inside].mean() - p[inside].mean())
    return total


def f1(p: np.ndarray, y: np.ndarray) -> float:
    called = p > 0.5
    tp, fp, fn = (called & (y == 1)).sum(), (called & (y == 0)).sum(), (~called & (y == 1)).sum()
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def image_figures(p: np.ndarray, y: np.ndarray, area: np.ndarray) -> dict[str, float]:
    real = y == 0
    return {
        "image_f1": f1(p, y),
        "image_acc": float(((p > 0.5) == (y == 1)).mean()),
        "image_auc": auc(p, y),
        "tpr_at_fpr5": float((p[~real] > np.percentile(p[real], 95)).mean()),
        "ece": ece(p, y),
        "real_fpr": float((p[real] >= 0.5).mean()),
        "real_area": float(area[real].mean()),
    }


def pixel_figures(columns: dict[str, np.ndarray], chosen: np.ndarray) -> dict[str, float]:
    return {name: float(np.nanmean(columns[name][chosen])) for name in PIXEL}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("per_image")
    parser.add_argument("--resamples", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    out, drawn = {}, {}
    for split, c in read(args.per_image).items():
        y, p, area = c["label"], c["p"], c["area"]
        partial = np.flatnonzero(c["partial"])
        reals, fakes = np.flatnonzero(y == 0), np.flatnonzero(y == 1)
        figures = {**pixel_figures(c, partial), **image_figures(p, y, area)}
        samples = defaultdict(list)
        for _ in range(args.resamples):
            images = np.concatenate([rng.choice(reals, len(reals)), rng.choice(fakes, len(fakes))])
            again = {
                **pixel_figures(c, rng.choice(partial, len(partial))),
                **image_figures(p[images], y[images], area[images]),
            }
            for name, value in again.items():
                samples[name].append(value)
        drawn[split] = {name: np.array(values) for name, values in samples.items()}
        out[split] = {**figures, "ci95": {k: list(np.nanpercentile(v, [2.5, 97.5])) for k, v in drawn[split].items()}}
    names = list(next(iter(drawn.values())))
    out["mean"] = {
        **{name: float(np.mean([out[s][name] for s in drawn])) for name in names},
        "ci95": {
            name: list(np.nanpercentile(np.nanmean([drawn[s][name] for s in drawn], axis=0), [2.5, 97.5]))
            for name in names
        },
    }
    json.dump(out, sys.stdout, indent=1)


if __name__ == "__main__":
    main()
