"""``opensdi_report.html``: the protocol's results as one self-contained page people look at.

Written by ``benco test`` (and ``benco demo``) beside ``opensdi_results.json``, whose numbers it
shows, read back from that file so the page and the JSON cannot disagree. Sections: the run's
facts; the table, each figure with its 95% interval; per-generator bars of every metric (the
paper's rows beside ours with ``--compare-paper``); ROC curves of the detection score per
generator; the fake probability of real and fake images (what ``real_fpr`` and
``tpr_at_fpr5`` read); a reliability diagram per generator (``ece``); mean pixel F1 against
the threshold with the best threshold marked (and the checkpoint's validation threshold);
each generator's 4 best and 4 worst partial fakes (image, truth, predicted probability,
overlay); robustness curves when ``--perturb`` ran; the shortcut audit of the data when one is
found. Every picture is an embedded PNG, so the file opens from disk with no network.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, default_collate

from imdlbenco_maskclip.common import html_page, pictures
from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.evaluation import calibration, protocol
from imdlbenco_maskclip.evaluation.leaderboard import (
    PAPER_NAMES,
    beside_paper,
    leaderboard,
    paper_columns,
    paper_rows,
    paper_value,
)
from imdlbenco_maskclip.evaluation.protocol import THRESHOLDS, ImageRecord, Metric, ProtocolResult
from imdlbenco_maskclip.inference.forward import forward

REPORT_NAME = "opensdi_report.html"
AUDIT_NAME = "audit.json"
EXAMPLES_PER_SIDE = 4
THUMBNAIL = 128


@dataclass
class Example:
    """One partial fake shown in the report, with its pixel F1 and whether it is among the
    split's best or worst."""

    split: str
    name: str
    side: str
    pixel_f1: float
    image: Image.Image
    truth: Image.Image
    probability: Image.Image
    overlay: Image.Image


def choose_examples(
    records: Sequence[ImageRecord], per_side: int = EXAMPLES_PER_SIDE
) -> dict[str, dict[str, list[ImageRecord]]]:
    """Per split, the partial fakes with the highest and the lowest pixel F1 (``best``,
    ``worst``; disjoint when a split has fewer than twice ``per_side``)."""
    chosen: dict[str, dict[str, list[ImageRecord]]] = {}
    for split in dict.fromkeys(r.split for r in records):
        scored = [r for r in records if r.split == split and r.partial and r.pixel.get("pixel_f1") is not None]
        ranked = sorted(scored, key=lambda r: (-r.pixel["pixel_f1"], r.name))
        best = ranked[: min(per_side, (len(ranked) + 1) // 2)]
        worst = ranked[len(best) :][-per_side:][::-1]
        if best:
            chosen[split] = {"best": best, "worst": worst}
    return chosen


def render_examples(
    model: torch.nn.Module,
    datasets: Mapping[str, Dataset],
    chosen: Mapping[str, Mapping[str, Sequence[ImageRecord]]],
    device: torch.device,
) -> list[Example]:
    """The chosen images passed through the model again (one batch per split), as thumbnails."""
    examples = []
    for split, sides in chosen.items():
        picked = [(side, record) for side, records in sides.items() for record in records]
        samples = [datasets[split][record.index] for _, record in picked]
        batch = default_collate(samples)
        batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        probabilities = forward(model, batch)["pred_mask"].detach().float().cpu()
        for (side, record), sample, probability in zip(picked, samples, probabilities):
            image = pictures.dataset_image(sample["image"])
            prob = probability[0].numpy()
            examples.append(
                Example(
                    split,
                    record.name,
                    side,
                    float(record.pixel["pixel_f1"]),
                    _thumbnail(image),
                    _thumbnail(pictures.probability_png(sample["mask"][0].numpy())),
                    _thumbnail(pictures.probability_png(prob)),
                    _thumbnail(pictures.overlay(image, prob)),
                )
            )
    return examples


def _thumbnail(picture: Image.Image) -> Image.Image:
    return picture.resize((THUMBNAIL, THUMBNAIL), Image.BILINEAR)


def roc(records: Sequence[ImageRecord]) -> tuple[np.ndarray, np.ndarray] | None:
    """False and true positive rates of the fake probability over a split's images; None
    without probabilities or without both classes."""
    from sklearn.metrics import roc_curve

    if not records or any(r.pred_label is None for r in records) or len({r.label for r in records}) < 2:
        return None
    fpr, tpr, _ = roc_curve([r.label for r in records], [r.pred_label for r in records])
    return fpr, tpr


def run_facts(result: ProtocolResult, device: torch.device, precision: str) -> dict[str, Any]:
    """What every report states besides the model and data: counts, device, the precision the
    model computed in (``float32``, or ``bfloat16``/``float16`` under autocast), date, versions."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return f"{package} {version(package)}"
        except PackageNotFoundError:  # run from a source tree
            return f"{package} (not installed)"

    return {
        "images": f"{result.mean.n_images} ({result.mean.n_real} real, {result.mean.n_fake} fake; "
        f"{result.mean.n_pixel} partial fakes scored for localization)",
        "generators": ", ".join(r.split for r in result.rows),
        "device": f"{device}",
        "precision": precision if precision == "float32" else f"{precision} (autocast)",
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "versions": f"{installed('imdlbenco')}, {installed('imdlbenco-maskclip')}, torch {torch.__version__}",
    }


def find_audit(data_paths: Sequence[str], explicit: str | None) -> Path | None:
    """``audit.json`` given by ``--audit`` (the file or its folder), else the first one beside
    the test data (in a data folder, or the folder of a parquet file)."""
    from imdlbenco_maskclip.common.errors import UserError
    from imdlbenco_maskclip.host.datasets import split_named

    if explicit:
        path = Path(explicit).expanduser()
        path = path / AUDIT_NAME if path.is_dir() else path
        if not path.is_file():
            raise UserError(f"--audit: no {AUDIT_NAME} at {path} (write one with 'benco opensdi audit')")
        return path
    for entry in data_paths:
        folder = Path(split_named(entry)[1]).expanduser()
        folder = folder if folder.is_dir() else folder.parent
        if (folder / AUDIT_NAME).is_file():
            return folder / AUDIT_NAME
    return None


def write_report(
    output_dir: Path,
    records: Sequence[ImageRecord],
    examples: Sequence[Example],
    facts: Mapping[str, Any],
    audit: Path | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """``output_dir/opensdi_report.html`` from ``opensdi_results.json`` in the same folder (its
    numbers), the per-image ``records`` (curves) and the ``examples``."""
    payload = json.loads((output_dir / "opensdi_results.json").read_text(encoding="utf-8"))
    splits = [row["split"] for row in payload["splits"]]
    metrics = [
        m for m in protocol.METRICS if any(row.get(m.name) is not None for row in [*payload["splits"], payload["mean"]])
    ]
    sections = [
        _facts_section(facts),
        "".join(f'<p class="warning">{html_page.escape(note)}</p>' for note in notes),
        _table_section(payload),
        _bars_section(payload, metrics),
        _roc_section(records, splits),
        _probability_section(records, splits),
        _reliability_section(records, splits, {row["split"]: row.get("ece") for row in payload["splits"]}),
        _threshold_section(records, splits, payload.get("val_threshold")),
        _examples_section(examples),
        _perturbation_section(payload, metrics),
        _audit_section(audit),
    ]
    path = output_dir / REPORT_NAME
    write_text(path, html_page.page(f"OpenSDI protocol: {payload['model']}", "\n".join(s for s in sections if s)))
    return path


def _facts_section(facts: Mapping[str, Any]) -> str:
    rows = "".join(f"<tr><th>{html_page.escape(k)}</th><td>{html_page.escape(v)}</td></tr>" for k, v in facts.items())
    return f'<h2>Run</h2><table class="facts" id="facts">{rows}</table>'


def _table_section(payload: Mapping[str, Any]) -> str:
    from imdlbenco_maskclip.evaluation.tables import cells, columns

    metrics = list(protocol.METRICS)
    if payload.get("val_threshold") is not None:
        metrics.append(protocol.f1_at_threshold(payload["val_threshold"]))
    rows = [cells(row, metrics, intervals=True) for row in [*payload["splits"], payload["mean"]]]
    empty = payload["mean"].get("n_empty_mask") or 0
    text = (
        "<h2>Results</h2><p>Pixel metrics: mean over the partial fakes at threshold 0.5; image metrics: over all "
        "images (TPR at 5% FPR: the fakes whose probability is above the 95th percentile of the reals'; ECE: "
        "expected calibration error of the fake probability, 15 bins, lower is better); real FPR: share of real "
        "images called fake at 0.5; real area: mean share of a real image's pixels predicted above 0.5 (lower is "
        "better for these three). The mean row is the unweighted mean over generators.</p>"
    )
    if "bootstrap" in payload:
        settings = payload["bootstrap"]
        text += (
            f"<p>In brackets: {settings['level']}% percentile-bootstrap intervals ({settings['resamples']} resamples, "
            f"seed {settings['seed']}): pixel figures redraw the split's partial fakes, the others its images within "
            "each label; the mean row redraws every split independently. A mean (pixel figures, accuracies, real FPR, "
            "real area) lies inside its interval; AUC, TPR at 5% FPR and ECE are not means and need not.</p>"
        )
    if empty:
        text += (
            f'<p id="empty-masks">{empty} partial fake(s) have an empty mask at the evaluated size (n empty mask): '
            "counted in n partial and left out of pixel AUC, which Benco's evaluator would score 0.</p>"
        )
    table = html_page.table_html([title for _, title in columns(metrics)], rows, "results", "estimates")
    text += f'<div class="wide">{table}</div>'
    if "paper" in payload:
        text += _paper_table(payload)
    return text


def _paper_table(payload: Mapping[str, Any]) -> str:
    ours = {row["split"]: row for row in [*payload["splits"], payload["mean"]]}
    shown = [m for m in protocol.METRICS if m.paper is not None]
    header = ["model", *(f"{g} {m.title}" for g in paper_columns() for m in shown)]
    rows = [
        [f"ours: {payload['model']}" if name is None else f"{name} (paper)", *values]
        for name, values in beside_paper(ours, shown)
    ]
    return (
        f"<h3>Beside the paper</h3><p>{html_page.escape(leaderboard()['source'])}</p>"
        + f'<div class="wide">{html_page.table_html(header, rows, "paper")}</div>'
    )


def _bars_section(payload: Mapping[str, Any], metrics: Sequence[Metric]) -> str:
    plt = html_page.pyplot()
    groups = [row["split"] for row in payload["splits"]] + ["mean"]
    ours = {row["split"]: row for row in [*payload["splits"], payload["mean"]]}
    same = PAPER_NAMES.get(payload["model"])
    colours = plt.get_cmap("tab20")
    series = [(f"ours: {payload['model']}", lambda g, m: ours[g].get(m.name), {"color": "black"})]
    if "paper" in payload:
        series += [
            (
                f"{name} (paper)",
                lambda g, m, name=name: paper_value(name, g, m),
                {"color": colours(k % 20), "alpha": 1.0 if name == same else 0.7},
            )
            for k, name in enumerate(paper_rows(), 1)
        ]
    columns = min(4, len(metrics))
    rows = -(-len(metrics) // columns)
    figure, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.2 * rows), squeeze=False)
    for axis, metric in zip(axes.flat, metrics):
        values = [(label, [value(g, metric) for g in groups], style) for label, value, style in series]
        html_page.grouped_bars(axis, groups, [s for s in values if any(v is not None for v in s[1])], rotation=30)
        axis.set_title(metric.title)
        axis.set_ylim(0, 1)
    for axis in list(axes.flat)[len(metrics) :]:
        axis.axis("off")
    legend = {}
    for axis in axes.flat:
        for handle, label in zip(*axis.get_legend_handles_labels()):
            legend.setdefault(label, handle)
    lines = -(-len(legend) // 5)
    figure.legend(legend.values(), legend.keys(), loc="lower center", ncol=min(len(legend), 5))
    figure.tight_layout(rect=(0, 0.035 * lines + 0.02, 1, 1))
    caption = "Each metric per generator" + (" beside the paper's rows" if "paper" in payload else "")
    return "<h2>Per generator</h2>" + html_page.figure_html(html_page.figure_uri(figure), caption, "bars")


def _roc_section(records: Sequence[ImageRecord], splits: Sequence[str]) -> str:
    from sklearn.metrics import auc

    curves = {split: roc([r for r in records if r.split == split]) for split in splits}
    curves = {split: curve for split, curve in curves.items() if curve is not None}
    if not curves:
        return (
            "<h2>Detection: ROC</h2><p>No ROC: the model gives no fake probability, or no split has both classes.</p>"
        )
    plt = html_page.pyplot()
    figure, axis = plt.subplots(figsize=(5.5, 5))
    for split, (fpr, tpr) in curves.items():
        axis.plot(fpr, tpr, label=f"{split} (AUC {auc(fpr, tpr):.3f})")
    axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    axis.set_xlabel("false positive rate (real called fake)")
    axis.set_ylabel("true positive rate (fake called fake)")
    axis.legend(loc="lower right")
    return "<h2>Detection: ROC</h2>" + html_page.figure_html(
        html_page.figure_uri(figure), "ROC of the fake probability per generator", "roc"
    )


def _probabilities(records: Sequence[ImageRecord], split: str) -> tuple[np.ndarray, np.ndarray] | None:
    """A split's fake probabilities and labels; None when the model gives no probability."""
    chosen = [r for r in records if r.split == split]
    if not chosen or any(r.pred_label is None for r in chosen):
        return None
    return np.array([r.pred_label for r in chosen], dtype=np.float64), np.array([r.label for r in chosen])


def _panels(records: Sequence[ImageRecord], splits: Sequence[str], height: float) -> tuple[dict, Any, Any] | None:
    """Each split's fake probabilities and labels, and a figure with one panel per split
    (shared y axis); None when no split has probabilities."""
    shown = {split: found for split in splits if (found := _probabilities(records, split)) is not None}
    if not shown:
        return None
    plt = html_page.pyplot()
    figure, axes = plt.subplots(1, len(shown), figsize=(3.2 * len(shown), height), squeeze=False, sharey=True)
    return shown, figure, axes


def _probability_section(records: Sequence[ImageRecord], splits: Sequence[str]) -> str:
    panels = _panels(records, splits, 3.0)
    if panels is None:
        return ""
    shown, figure, axes = panels
    bins = np.linspace(0, 1, 21)
    for axis, (split, (p, y)) in zip(axes.flat, shown.items()):
        axis.hist(p[y == 0], bins=bins, alpha=0.6, color="tab:blue", label="real")
        axis.hist(p[y == 1], bins=bins, alpha=0.6, color="tab:red", label="fake")
        axis.axvline(0.5, color="grey", linestyle=":", linewidth=1)
        if (y == 0).any():
            axis.axvline(np.percentile(p[y == 0], 95), color="tab:blue", linestyle="--", linewidth=1)
        axis.set_title(split)
        axis.set_xlabel("fake probability")
    axes.flat[0].set_ylabel("images")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    return (
        "<h2>Real photos and the operating point</h2><p>The fake probability of real and fake images per "
        "generator. Real images right of the dotted line (0.5) are the real FPR; fakes right of the dashed line "
        "(the reals' 95th percentile) are the TPR at 5% FPR. Real area, the share of a real image's pixels "
        "predicted edited, is in the table and the bars.</p>"
        + html_page.figure_html(html_page.figure_uri(figure), "fake probability of real and fake images", "real-images")
    )


def _reliability_section(records: Sequence[ImageRecord], splits: Sequence[str], ece: Mapping[str, float | None]) -> str:
    """One reliability diagram per split, titled with its ECE as the results file holds it."""
    panels = _panels(records, splits, 3.4)
    if panels is None:
        return ""
    shown, figure, axes = panels
    rows = []
    for axis, (split, (p, y)) in zip(axes.flat, shown.items()):
        bins = calibration.reliability(p, y)
        axis.bar(
            [(b.low + b.high) / 2 for b in bins],
            [b.fake_share for b in bins],
            width=1 / calibration.BINS,
            edgecolor="black",
            color="tab:orange",
            alpha=0.7,
        )
        axis.plot([b.mean_probability for b in bins], [b.fake_share for b in bins], "o", color="black", markersize=3)
        axis.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        axis.set_xlim(0, 1)
        axis.set_ylim(0, 1)
        axis.set_title(f"{split} (ECE {ece[split]:.3f})")
        axis.set_xlabel("fake probability")
        rows += [[split, f"{b.low:.3f}-{b.high:.3f}", b.images, b.mean_probability, b.fake_share] for b in bins]
    axes.flat[0].set_ylabel("share of fakes")
    figure.tight_layout()
    return (
        "<h2>Calibration: reliability</h2><p>The fake probability cut into 15 equal bins: per bin, the share of "
        "fakes among its images (bars) against its mean probability (dots); a calibrated model lies on the "
        "diagonal. ECE weighs each bin's gap by its images.</p>"
        + html_page.figure_html(html_page.figure_uri(figure), "reliability diagram per generator", "reliability")
        + html_page.table_html(
            ["split", "bin", "images", "mean probability", "share of fakes"], rows, "reliability-table"
        )
    )


def _threshold_section(
    records: Sequence[ImageRecord], splits: Sequence[str], val_threshold: float | None = None
) -> str:
    curves = {split: protocol.threshold_curve([r for r in records if r.split == split]) for split in splits}
    curves = {split: curve for split, curve in curves.items() if any(v is not None for v in curve)}
    if not curves:
        return ""
    plt = html_page.pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 4.5))
    rows = []
    for split, curve in curves.items():
        values = np.array([np.nan if v is None else v for v in curve])
        (line,) = axis.plot(THRESHOLDS, values, label=split)
        best = int(np.nanargmax(values))
        axis.plot(THRESHOLDS[best], values[best], "o", color=line.get_color(), markersize=7)
        rows.append([split, curve[THRESHOLDS.index(0.5)], THRESHOLDS[best], float(values[best])])
    axis.axvline(0.5, color="grey", linestyle=":", linewidth=1)
    if val_threshold is not None:
        axis.axvline(val_threshold, color="black", linestyle="--", linewidth=1, label="chosen on validation")
    axis.set_xlabel("threshold on the predicted probability")
    axis.set_ylabel("mean pixel F1 over partial fakes")
    axis.set_ylim(0, 1)
    axis.legend()
    honest = (
        f" The dashed line is the checkpoint's threshold, {val_threshold:g}, chosen on held-out validation: "
        "the table's pixel F1 there is an honest figure."
        if val_threshold is not None
        else ""
    )
    return (
        "<h2>Localization: pixel F1 against the threshold</h2><p>The protocol reports F1 at 0.5; "
        "the dot marks each generator's best threshold (chosen on the test data itself, so an optimistic figure)."
        f"{honest}</p>"
        + html_page.figure_html(html_page.figure_uri(figure), "mean pixel F1 against the threshold", "thresholds")
        + html_page.table_html(["split", "F1 at 0.5", "best threshold", "best F1"], rows, "best-thresholds")
    )


def _examples_section(examples: Sequence[Example]) -> str:
    if not examples:
        return ""
    parts = [
        "<h2>Best and worst partial fakes</h2><p>Per generator, by pixel F1. Each example: image, truth, "
        "predicted probability, overlay (red: probability above 0.5).</p>"
    ]
    for split in dict.fromkeys(e.split for e in examples):
        for side in ("best", "worst"):
            shown = [e for e in examples if e.split == split and e.side == side]
            if not shown:
                continue
            cells = "".join(
                '<div class="example"><div>'
                + "".join(
                    f'<img src="{html_page.picture_uri(picture, photo)}" alt="{kind}">'
                    for kind, picture, photo in (
                        ("image", e.image, True),
                        ("truth", e.truth, False),
                        ("probability", e.probability, False),
                        ("overlay", e.overlay, True),
                    )
                )
                + f'</div>{html_page.escape(e.name)}<br>pixel F1 <span data-value="{e.pixel_f1!r}">{e.pixel_f1:.3f}</span></div>'
                for e in shown
            )
            parts.append(
                f"<h3>{html_page.escape(split)}: {side} {len(shown)}</h3>"
                f'<div class="examples" id="examples-{html_page.escape(split)}-{side}">{cells}</div>'
            )
    return "".join(parts)


def _perturbation_section(payload: Mapping[str, Any], metrics: Sequence[Metric]) -> str:
    from imdlbenco_maskclip.evaluation.perturbations import KINDS

    perturbations = payload.get("perturbations") or {}
    if not perturbations:
        return ""
    kinds: dict[str, list[tuple[float, Mapping[str, Any]]]] = {}
    for key, result in perturbations.items():
        kind, level = key.split(":", 1)
        kinds.setdefault(kind, []).append((float(level), result["mean"]))
    plt = html_page.pyplot()
    colours = plt.get_cmap("tab10")
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.2 * len(kinds), 3.8), squeeze=False)
    for axis, (kind, levels) in zip(axes.flat, kinds.items()):
        levels.sort(key=lambda item: item[0])
        for number, metric in enumerate(metrics):
            values = [mean.get(metric.name) for _, mean in levels]
            if any(v is not None for v in values):
                colour = colours(number % 10)
                axis.plot(
                    [x for x, _ in levels],
                    [np.nan if v is None else v for v in values],
                    "o-",
                    color=colour,
                    label=metric.title,
                )
            clean = payload["mean"].get(metric.name)
            if clean is not None:
                axis.axhline(clean, color=colours(number % 10), linestyle=":", linewidth=1)
        axis.set_title(kind)
        axis.set_xlabel(KINDS[kind].axis if kind in KINDS else "level")
        if kind in KINDS and KINDS[kind].milder_when_higher:
            axis.invert_xaxis()
        axis.set_ylim(0, 1)
    axes.flat[0].set_ylabel("mean over generators")
    axes.flat[0].legend(fontsize="small")
    figure.tight_layout()
    header = ["perturbation", *(m.title for m in metrics)]
    rows = [["none", *(payload["mean"].get(m.name) for m in metrics)]]
    rows += [[key, *(result["mean"].get(m.name) for m in metrics)] for key, result in perturbations.items()]
    return (
        "<h2>Robustness</h2><p>Each metric's mean over generators at every perturbation level, mild to strong "
        "from left to right; dotted: the clean images. Applied to the image before the model's resize; masks untouched.</p>"
        + html_page.figure_html(html_page.figure_uri(figure), "metrics against perturbation level", "perturbations")
        + html_page.table_html(header, rows, "perturbation-table")
    )


def _audit_section(audit: Path | None) -> str:
    if audit is None:
        return ""
    from dataset_adapters.audit import load_audit

    data = load_audit(audit)
    rows = [
        [
            generator,
            entry["counts"].get("real"),
            entry["counts"].get("fake"),
            entry.get("majority"),
            entry.get("accuracy"),
            entry.get("accuracy_std"),
        ]
        for generator, entry in data["generators"].items()
    ]
    header = ["generator", "real", "fake", "majority class", "metadata-only accuracy", "std over folds"]
    text = (
        f"<h2>Shortcut audit</h2><p>From {html_page.escape(audit)}: the cross-validated accuracy of a real/fake "
        f"detector that reads only file metadata ({html_page.escape(', '.join(data['features']))}). "
        "Near the majority class share, metadata gives nothing away; near 1.0, image size or format alone "
        "separates the classes, and detection scores on that data measure the shortcut as much as the generator.</p>"
        + html_page.table_html(header, rows, "audit")
    )
    if data.get("figure"):
        uri = html_page.data_uri(Path(data["figure"]).read_bytes())
        text += html_page.figure_html(uri, "image width and height per generator and label", "audit-figure")
    return text
