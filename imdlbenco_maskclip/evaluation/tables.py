"""The protocol table as text, Markdown, CSV and JSON, and the Markdown of the paper's rows beside ours."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.html_page import cell
from imdlbenco_maskclip.evaluation.leaderboard import PAPER_NAMES, beside_paper, leaderboard, paper_columns
from imdlbenco_maskclip.evaluation.protocol import ProtocolResult, image_metrics, pixel_metrics


def columns() -> list[tuple[str, str]]:
    """(key, title) of the table's columns: the protocol's metrics, each population followed by
    its count."""
    return [
        ("split", "split"),
        *((m.name, m.title) for m in pixel_metrics()),
        ("n_pixel", "n partial"),
        *((m.name, m.title) for m in image_metrics()),
        ("n_images", "n images"),
    ]


def markdown_table(header: list[str], rows: list[list[Any]]) -> str:
    cells = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def result_table(result: ProtocolResult) -> str:
    table = columns()
    rows = [[r.as_dict()[key] for key, _ in table] for r in [*result.rows, result.mean]]
    return markdown_table([title for _, title in table], rows)


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
    *,
    precision: str = "float32",
) -> list[Path]:
    """``opensdi_results.{json,md,csv}`` and ``per_image.csv``; returns the paths written.
    ``selected_on`` is what the checkpoint was chosen on (None: not recorded); ``notes`` are
    warnings the Markdown repeats (e.g. that the checkpoint was chosen on a split it scores).
    ``perturbations`` (level key such as ``jpeg:50`` -> its result, from ``--perturb`` with
    ``perturb_seed``) adds the JSON's ``perturbations``, one Markdown section per level and CSV
    rows with a ``perturbation`` column (``none`` on the clean rows); without it the files are
    as before. ``per_image.csv`` is the clean run's. ``precision`` is what the model computed in
    (``float32``, ``bfloat16``, ``float16``), stated in the JSON and the Markdown."""
    output_dir.mkdir(parents=True, exist_ok=True)
    paths = {ext: output_dir / f"opensdi_results.{ext}" for ext in ("json", "md", "csv")}
    payload = {
        "model": model_name,
        "checkpoint": checkpoint,
        "selected_on": selected_on,
        "precision": precision,
        **result.as_dict(),
    }
    if compare:
        payload["paper"] = {"source": leaderboard()["source"], "name": PAPER_NAMES.get(model_name)}
    if perturbations:
        payload["perturb_seed"] = perturb_seed
        payload["perturbations"] = {level: r.as_dict() for level, r in perturbations.items()}
    write_text(paths["json"], json.dumps(payload, indent=2) + "\n")
    markdown = (
        f"# OpenSDI protocol: {model_name}\n\nCheckpoint: `{checkpoint}`\n\n"
        f"Selected on: {selected_on or 'not recorded in the checkpoint'}\n\nPrecision: {precision}\n\n"
        + "".join(f"**Warning:** {note}\n\n" for note in notes)
        + f"{result_table(result)}\n"
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
    buffer = io.StringIO()
    rows = [row.as_dict() for row in [*result.rows, result.mean]]
    if perturbations:
        rows = [{**row, "perturbation": "none"} for row in rows] + [
            {**row.as_dict(), "perturbation": level} for level, r in perturbations.items() for row in [*r.rows, r.mean]
        ]
    writer = csv.DictWriter(buffer, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text(paths["csv"], buffer.getvalue())
    per_image = output_dir / "per_image.csv"
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["split", "name", "label", "partial_fake", "pred_label", *(m.name for m in pixel_metrics())])
    for r in result.records:
        writer.writerow(
            [r.split, r.name, r.label, int(r.partial), r.pred_label, *(r.pixel.get(m.name) for m in pixel_metrics())]
        )
    write_text(per_image, buffer.getvalue())
    return [*paths.values(), per_image]
