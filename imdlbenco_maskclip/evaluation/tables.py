"""The protocol table as text, Markdown, CSV and JSON, and the Markdown of the paper's rows beside ours.

The console table shows values only; the files show each figure with its 95% interval when the
bootstrap ran (Markdown ``0.672 [0.641, 0.702]``, CSV ``<figure>_low``/``_high`` columns, JSON
``ci95`` per row).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.html_page import Estimate, cell
from imdlbenco_maskclip.evaluation import per_image, protocol
from imdlbenco_maskclip.evaluation.bootstrap import Settings
from imdlbenco_maskclip.evaluation.leaderboard import PAPER_NAMES, beside_paper, leaderboard, paper_columns
from imdlbenco_maskclip.evaluation.protocol import (
    PARTIAL_FAKES,
    POPULATIONS,
    Metric,
    ProtocolResult,
    SplitScores,
)

COUNT_TITLES = {"n_pixel": "n partial", "n_empty_mask": "n empty mask", "n_images": "n images", "n_real": "n real"}


def columns(metrics: Sequence[Metric] | None = None) -> list[tuple[str, str]]:
    """(key, title) of the table's columns: the figures of ``metrics`` (default ``METRICS``),
    each population's followed by its count (the partial fakes' also by those with an empty
    mask)."""
    table = [("split", "split")]
    for population, count in POPULATIONS.items():
        table += [(m.name, m.title) for m in metrics or protocol.METRICS if m.population == population]
        table.append((count, COUNT_TITLES[count]))
        if population == PARTIAL_FAKES:
            table.append(("n_empty_mask", COUNT_TITLES["n_empty_mask"]))
    return table


def cells(row: Mapping[str, Any], metrics: Sequence[Metric], intervals: bool) -> list[Any]:
    """One row's cells under ``columns(metrics)``: with ``intervals``, each figure that has one
    as an ``Estimate``."""
    ci95 = (row.get("ci95") or {}) if intervals else {}
    out = []
    for key, _ in columns(metrics):
        value, bounds = row.get(key), ci95.get(key)
        out.append(Estimate(value, *bounds) if value is not None and bounds else value)
    return out


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def result_table(result: ProtocolResult, intervals: bool = False) -> str:
    """The rows and the mean in Markdown; with ``intervals``, each figure with its 95% interval
    (the console shows values only)."""
    table = columns(result.metrics)
    rows = [cells(r.as_dict(), result.metrics, intervals) for r in [*result.rows, result.mean]]
    return markdown_table([title for _, title in table], rows)


def interval_note(bootstrap: Settings) -> str:
    """How the intervals were made, and what they say, in one paragraph."""
    return (
        f"In brackets: 95% percentile-bootstrap intervals ({bootstrap.resamples} resamples, seed {bootstrap.seed}): "
        "pixel figures redraw the split's partial fakes, the others its images within each label; the mean row "
        "redraws every split independently. Averages (pixel figures, accuracies, real FPR, real area) lie inside "
        "their interval; AUC, TPR at 5% FPR and ECE need not."
    )


def empty_mask_note(result: ProtocolResult) -> str | None:
    """Says how many partial fakes have an empty mask at the evaluated size, if any do."""
    empty = result.mean.n_empty_mask
    if not empty:
        return None
    per_split = ", ".join(f"{r.split} {r.n_empty_mask}" for r in result.rows if r.n_empty_mask)
    return (
        f"{empty} partial fake(s) have an empty mask at the evaluated size ({per_split}): counted in n partial, "
        "left out of pixel AUC (which Benco's evaluator would score 0)."
    )


def perturbation_table(clean: ProtocolResult, perturbations: Mapping[str, ProtocolResult]) -> str:
    """The mean row of the clean run (``none``) and of each perturbation level, one line each,
    so that a metric's fall with the level reads down a column."""
    table = columns()[1:]
    rows = [
        [level, *(result.mean.as_dict()[key] for key, _ in table)]
        for level, result in {"none": clean, **perturbations}.items()
    ]
    return markdown_table(["perturbation", *(title for _, title in table)], rows)


def paper_comparison(result: ProtocolResult, model_name: str) -> str:
    """Our pixel F1 and image accuracy per generator beside every row the paper reports."""
    from imdlbenco_maskclip.evaluation.protocol import metric_named

    board = leaderboard()
    shown = {"F1": metric_named("pixel_f1"), "acc": metric_named("image_acc")}
    header = ["model", *[f"{g} {short}" for g in paper_columns() for short in shown]]
    ours = {r.split: r.as_dict() for r in [*result.rows, result.mean]}
    same = PAPER_NAMES.get(model_name)
    rows = [
        [f"ours: {model_name}" if name is None else f"{name} (paper{', same model' if name == same else ''})", *values]
        for name, values in beside_paper(ours, list(shown.values()))
    ]
    notes = (
        "F1: pixel F1 over partial fakes; acc: image accuracy over all images (both at 0.5). "
        f"Paper figures: {board['source']}. {board.get('note', '')}"
    )
    return markdown_table(header, rows) + "\n\n" + notes.rstrip()


def write_results(
    result: ProtocolResult,
    output_dir: Path,
    model_name: str,
    checkpoint: str,
    compare: bool,
    selected_on: str | None = None,
    notes: Sequence[str] = (),
    perturbations: Mapping[str, ProtocolResult] | None = None,
    perturb_seed: int | None = None,
    bootstrap: Settings | None = None,
    source: Mapping[str, Any] | None = None,
    *,
    precision: str = "float32",
) -> list[Path]:
    """``opensdi_results.{json,md,csv}`` and ``per_image.csv``; returns the paths written.
    ``selected_on`` is what the checkpoint was chosen on (None: not recorded); ``notes`` are
    warnings the Markdown repeats (e.g. that the checkpoint was chosen on a split it scores).
    ``perturbations`` (level key such as ``jpeg:50`` -> its result, from ``--perturb`` with
    ``perturb_seed``) adds the JSON's ``perturbations``, one Markdown section per level and CSV
    rows with a ``perturbation`` column (``none`` on the clean rows); without it the files are
    as before. ``bootstrap``: how the clean rows' intervals (``ci95``) were drawn, recorded in
    the JSON. ``per_image.csv`` is the clean run's. ``source`` (where the checkpoint came from,
    ``Checkpoint.source``) adds the JSON's ``checkpoint_source`` and the Markdown's revision and
    sha256 when it says more than the path. ``precision`` is what the model computed in
    (``float32``, ``bfloat16``, ``float16``), stated in the JSON and the Markdown."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: output_dir / f"opensdi_results.{ext}" for ext in ("json", "md", "csv")}
    known = {key: value for key, value in (source or {}).items() if key != "checkpoint"}
    payload = {
        "model": model_name,
        "checkpoint": checkpoint,
        "selected_on": selected_on,
        "precision": precision,
        **result.as_dict(),
    }
    if known:
        payload["checkpoint_source"] = known
    intervals = bootstrap is not None and bootstrap.resamples > 0
    if intervals:
        payload["bootstrap"] = bootstrap.as_dict()
    if result.val_threshold is not None:
        payload["val_threshold"] = result.val_threshold
    if result.fingerprints:
        payload["fingerprints"] = result.fingerprints
    if compare:
        payload["paper"] = {"source": leaderboard()["source"], "name": PAPER_NAMES.get(model_name)}
    if perturbations:
        payload["perturb_seed"] = perturb_seed
        payload["perturbations"] = {level: r.as_dict() for level, r in perturbations.items()}
    write_text(paths["json"], json.dumps(payload, indent=2) + "\n")
    explained = [text for text in (interval_note(bootstrap) if intervals else None, empty_mask_note(result)) if text]
    markdown = (
        f"# OpenSDI protocol: {model_name}\n\nCheckpoint: `{checkpoint}`"
        + "".join(f", {key} `{value}`" for key, value in known.items() if key != "reference")
        + "\n\n"
        f"Selected on: {selected_on or 'not recorded in the checkpoint'}\n\nPrecision: {precision}\n\n"
        + "".join(f"**Warning:** {note}\n\n" for note in notes)
        + f"{result_table(result, intervals)}\n"
        + "".join(f"\n{text}\n" for text in explained)
    )
    if result.val_threshold is not None:
        markdown += (
            f"\nThe checkpoint's threshold chosen on held-out validation is {result.val_threshold:g}; "
            f"'{protocol.f1_at_threshold(result.val_threshold).title}' is pixel F1 there.\n"
        )
    if compare:
        markdown += f"\n## Beside the paper\n\n{paper_comparison(result, model_name)}\n"
    if perturbations:
        markdown += (
            "\n## Perturbations\n\nEach level perturbs the test images before the resize, masks untouched "
            f"(noise seed {perturb_seed}). Means over the splits:\n\n{perturbation_table(result, perturbations)}\n"
            + "".join(f"\n### {level}\n\n{result_table(r)}\n" for level, r in perturbations.items())
        )
    write_text(paths["md"], markdown)
    write_text(paths["csv"], _csv(result, perturbations))
    written = per_image.write(result.records, output_dir / per_image.FILE_NAME, result.extra)
    return [*paths.values(), written]


def _csv(result: ProtocolResult, perturbations: Mapping[str, ProtocolResult] | None) -> str:
    """``opensdi_results.csv``: a line per row and the mean (and per perturbation level, with a
    ``perturbation`` column); ``<figure>_low``/``_high`` hold the clean rows' intervals."""

    def line(row: SplitScores, level: str | None) -> dict[str, Any]:
        values = {k: v for k, v in row.as_dict().items() if k != "ci95"}
        if level is not None:
            values["perturbation"] = level
        for name, bounds in row.ci95.items():
            values[f"{name}_low"], values[f"{name}_high"] = bounds if bounds else (None, None)
        return values

    lines = [line(row, "none" if perturbations else None) for row in [*result.rows, result.mean]]
    for level, r in (perturbations or {}).items():
        lines += [line(row, level) for row in [*r.rows, r.mean]]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for values in lines for k in values)))
    writer.writeheader()
    writer.writerows(lines)
    return buffer.getvalue()
