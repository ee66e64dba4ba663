"""``audit.png``: the picture of a shortcut audit (``benco opensdi audit``), image width against
height per generator and label, written beside ``audit.json`` and shown in the report."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from dataset_adapters.audit import FIGURE_NAME, OpenSDIAudit
from dataset_adapters.vocabulary import LABEL_NAMES
from imdlbenco_maskclip.common import html_page
from imdlbenco_maskclip.common.atomic import atomic_path


def write_audit_figure(audit: OpenSDIAudit, output_dir: Path) -> Path:
    """Draw ``audit`` into ``output_dir/audit.png`` atomically; returns its path."""
    plt = html_page.pyplot()
    figure = _figure(audit, plt)
    path = Path(output_dir) / FIGURE_NAME
    with atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=100, bbox_inches="tight")
    plt.close(figure)
    return path


def _figure(audit: OpenSDIAudit, plt: Any) -> Any:
    """Width x height per generator, one panel each; a marker's area grows with the images at that size."""
    count = max(1, len(audit.generators))
    columns = min(3, count)
    lines = -(-count // columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.8 * lines), squeeze=False)
    styles = {
        "real": {"marker": "o", "facecolors": "none", "edgecolors": "tab:blue", "linewidths": 1.5},
        "fake": {"marker": "^", "color": "tab:red", "alpha": 0.5},
    }
    for axis, result in zip(axes.flat, audit.generators):
        meta = result.metadata
        points = Counter(zip(meta.label.tolist(), meta.width.tolist(), meta.height.tolist()))
        largest = max(points.values(), default=1)
        for i, label in enumerate(LABEL_NAMES):
            mine = [(w, h, n) for (which, w, h), n in points.items() if which == i]
            if mine:
                widths, heights, counts = zip(*mine)
                area = 15 + 185 * np.sqrt(np.asarray(counts) / largest)
                axis.scatter(widths, heights, s=area, label=f"{label} ({result.counts[label]})", **styles[label])
        score = "n/a" if result.accuracy is None else f"{result.accuracy:.2f} ± {result.accuracy_std:.2f}"
        axis.set_title(f"{result.generator}: metadata-only accuracy {score}", fontsize=10)
        axis.set_xlabel("width (px)")
        axis.set_ylabel("height (px)")
        axis.grid(alpha=0.3)
        axis.legend(fontsize=8, loc="best")
    for axis in list(axes.flat)[len(audit.generators) :]:
        axis.axis("off")
    figure.suptitle(f"Image sizes by label: {audit.source}", fontsize=11)
    figure.tight_layout()
    return figure
