"""``benco predict``: masks and fake probabilities for image files, folders and shards, in one
process or under torchrun.

The job's inputs are planned and shared among the processes by ``job_inputs``; each process reads
and decodes its share in DataLoader workers, predicts it in batches through ``Predictor`` and
writes it in one of two formats:

* ``files`` (small runs): ``masks/<name>.png`` and ``overlays/<name>.png`` at each image's size,
  and one table row per input in ``predictions.csv`` and ``.json``. Under torchrun each process
  writes its rows to ``predictions-RRRRR.csv/json`` and process 0 merges them, in the inputs'
  order, when every process is done. The file names are made unique over the whole job, so every
  process reads the keys of every shard (not their images).
* ``parquet`` (large runs): parts under ``predictions/`` that appear whole (``prediction_parts``),
  resumable with ``--resume``.

An input that cannot be read (not an image, truncated, too many pixels) gets a row with the
reason and a warning; the run goes on. Collective calls: one after planning (the job's size, for
the progress bar; also the wait for the removal of a killed run's temporaries) and one at the end.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch.distributed as dist

from imdlbenco_maskclip.checkpoints import inspection
from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.common.atomic import write_text
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.host.runtime import Runtime
from imdlbenco_maskclip.inference import prediction_parts as parts
from imdlbenco_maskclip.inference.job_inputs import Unit, plan_inputs, read_inputs, share_bounds, worker_order
from imdlbenco_maskclip.inference.job_progress import JobProgress
from imdlbenco_maskclip.inference.predictor import NamedImage, Prediction, Predictor

FORMATS = ("files", "parquet")
MASKS = ("png", "none")
FIELDS = [
    "name",
    "source",
    "width",
    "height",
    "fake_probability",
    "manipulated_fraction",
    "threshold",
    "mask",
    "precision",
    "error",
]
WRITER_THREADS = min(4, os.cpu_count() or 1)
"""Threads that encode and write the masks while the model computes the next batch (Pillow's
encoders and file writes release the GIL)."""
PNG_LEVEL = 1
"""zlib level of the PNGs ``benco predict`` writes: 4-5x faster than Pillow's default 6 for
1.1-1.4x the bytes on masks; on a 1024-px photo's overlay 3.1x faster for 1.09x the bytes."""

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class JobSettings:
    """How ``benco predict`` writes (``format``, ``masks``, ``part_size``, ``resume``) and reads
    (``batch_size`` images per forward, ``num_workers`` DataLoader workers decoding them)."""

    format: str = "files"
    masks: str = "png"
    batch_size: int = 8
    num_workers: int = 0
    part_size: int = 1000
    resume: bool = False


@dataclass
class JobSummary:
    """What the job did, over all its processes (on process 0; the others know their own)."""

    predicted: int = 0
    skipped: int = 0
    already_done: int = 0
    processes: int = 1
    seconds: float = 0.0
    written: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return (self.predicted + self.skipped) / self.seconds if self.seconds else 0.0


def plan_job(entries: Sequence[str], output_dir: Path, settings: JobSettings) -> list[Unit]:
    """The job's inputs, checked with the output folder before any model is loaded."""
    if settings.format not in FORMATS:
        raise UserError(f"--format: '{settings.format}' is not one of {', '.join(FORMATS)}")
    if settings.masks not in MASKS:
        raise UserError(f"--masks: '{settings.masks}' is not one of {', '.join(MASKS)}")
    if settings.resume and settings.format != "parquet":
        raise UserError("--resume continues a --format parquet run; the files format starts over")
    units = plan_inputs(entries, leave_out=output_dir)
    folder = output_dir / parts.FOLDER
    if settings.format == "parquet" and not settings.resume:
        found = parts.complete_parts(folder) + parts.temporaries(folder)
        if found:
            raise UserError(
                f"--output_dir: {folder} already holds {len(found)} part(s) of a run: "
                "pass --resume to continue it, or choose another --output_dir"
            )
    if settings.resume:
        foreign = sorted(parts.sources_of(parts.complete_parts(folder)) - {unit.source for unit in units})
        if foreign:
            raise UserError(
                f"--resume: the parts in {folder} hold predictions of {len(foreign)} source(s) that are not among "
                f"INPUTS (e.g. {foreign[0]}): resume with the inputs of that run, spelled as they were"
            )
    return units


def run_job(
    predictor: Predictor,
    units: Sequence[Unit],
    output_dir: Path,
    settings: JobSettings,
    runtime: Runtime | None = None,
) -> JobSummary:
    """Predict this process's share of ``units`` (from ``plan_job``) and write it."""
    runtime = runtime or Runtime(predictor.device)
    first, end = share_bounds(units, runtime.rank, runtime.world_size)
    if settings.format == "parquet":
        return _parquet_job(predictor, units[first:end], output_dir, settings, runtime)
    return _files_job(predictor, units, (first, end), output_dir, settings, runtime)


def _predictions(
    predictor: Predictor, items: Sequence[NamedImage], settings: JobSettings
) -> Iterator[tuple[int, NamedImage, Prediction]]:
    """(position in ``items``, item, prediction), in the order the DataLoader workers read them."""
    workers = min(settings.num_workers, -(-len(items) // settings.batch_size))  # no idle worker on a small job
    order = worker_order(len(items), settings.batch_size, workers)
    ordered = [items[i] for i in order]
    results = predictor.predict_many(ordered, settings.batch_size, workers, skip_unreadable=True)
    for position, item, result in zip(order, ordered, results):
        if result.error is not None:
            log.warning("skipped %s (%s): %s", item.name, item.source, result.error)
        yield position, item, result


def in_threads(work: Callable[[Any], Any], items: Iterable[Any], threads: int, ahead: int) -> Iterator[Any]:
    """``work(item)`` for each of ``items``, in order, computed by ``threads`` threads with at most
    ``ahead`` items in flight (so memory stays bounded however many items there are)."""
    pending: deque[Future] = deque()
    with ThreadPoolExecutor(threads, thread_name_prefix="predict-writer") as pool:
        for item in items:
            pending.append(pool.submit(work, item))
            if len(pending) >= ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def _gather(runtime: Runtime, value: Any) -> list[Any]:
    """``value`` of every process, in rank order (a collective call under torchrun)."""
    if not runtime.distributed:
        return [value]
    values: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(values, value)
    return values


def _summary(runtime: Runtime, mine: JobSummary) -> JobSummary:
    everyone = _gather(runtime, mine)
    return JobSummary(
        predicted=sum(s.predicted for s in everyone),
        skipped=sum(s.skipped for s in everyone),
        already_done=sum(s.already_done for s in everyone),
        processes=runtime.world_size,
        seconds=max(s.seconds for s in everyone),
        written=[path for s in everyone for path in s.written],
    )


def run_facts(predictor: Predictor, masks: str) -> dict[str, Any]:
    """What a part records of the run: the weights' source (with their sha256), precision,
    threshold, model and input handling."""
    return {
        "source": inspection.with_sha256(predictor.source),
        "precision": predictor.precision,
        "threshold": predictor.threshold,
        "model": type(predictor.model).__name__,
        "image_size": predictor.image_size,
        "padding": predictor.padding,
        "masks": masks,
    }


def mask_png(result: Prediction) -> bytes | None:
    """The probability map as PNG bytes (8-bit gray, white = manipulated), at the image's size."""
    if result.mask is None:
        return None
    buffer = io.BytesIO()
    pictures.probability_png(result.mask).save(buffer, format="PNG", compress_level=PNG_LEVEL)
    return buffer.getvalue()


def _parquet_row(item: NamedImage, result: Prediction, with_masks: bool) -> dict[str, Any]:
    row: dict[str, Any] = {"source": item.source, "key": item.name, "error": result.error}
    if result.error is None:
        row.update(
            width=result.image.width,
            height=result.image.height,
            fake_probability=result.fake_probability,
            manipulated_fraction=result.manipulated_fraction,
        )
        if with_masks and result.mask is not None:
            row["mask"] = {"bytes": mask_png(result), "path": None}
    return row


def _parquet_job(
    predictor: Predictor, share: Sequence[Unit], output_dir: Path, settings: JobSettings, runtime: Runtime
) -> JobSummary:
    """Predict the units of this process's ``share`` that no complete part holds, into parts."""
    folder = output_dir / parts.FOLDER
    complete = parts.complete_parts(folder)
    facts = run_facts(predictor, settings.masks)
    parts.check_same_run(complete, facts)
    mine = read_inputs(share)
    done = parts.done_inputs(complete, {unit.source for unit in share})
    todo = [item for item in mine if (item.source, item.name) not in done]
    if runtime.is_main:
        for temporary in parts.temporaries(folder):
            temporary.unlink(missing_ok=True)
    sizes = _gather(runtime, len(todo))  # also: no process writes before the temporaries are gone
    with_masks = settings.masks == "png"
    writer = parts.PartWriter(
        folder,
        runtime.rank,
        parts.next_chunk(complete, runtime.rank),
        settings.part_size,
        parts.part_schema(with_masks, facts),
    )
    summary = JobSummary(already_done=len(mine) - len(todo))
    progress = JobProgress(len(todo), sum(sizes), runtime.world_size, enabled=runtime.is_main)
    predictions = _predictions(predictor, todo, settings)
    rows = in_threads(
        lambda found: _parquet_row(*found[1:], with_masks), predictions, WRITER_THREADS, 2 * settings.batch_size
    )
    try:
        for row in rows:
            writer.add(row)
            summary.predicted += row["error"] is None
            summary.skipped += row["error"] is not None
            progress.update(1)
    finally:  # the rows predicted so far are complete: their part is closed and kept
        writer.close()
        progress.close()
    summary.seconds = progress.seconds
    summary.written = [str(path) for path in writer.written]
    return _summary(runtime, summary)


def safe_name(name: str) -> str:
    """A flat file stem for a name that may hold folders (shard keys do)."""
    stem = re.sub(r"\.[^./]*$", "", name)
    return re.sub(r"[^A-Za-z0-9._-]+", "__", stem).strip("_") or "image"


def unique_stems(names: Sequence[str]) -> list[str]:
    """``safe_name`` of each name, with ``-1``, ``-2``... after a stem already taken."""
    used: set[str] = set()
    stems = []
    for name in names:
        stem = candidate = safe_name(name)
        number = 1
        while candidate in used:
            candidate, number = f"{stem}-{number}", number + 1
        used.add(candidate)
        stems.append(candidate)
    return stems


def _file_row(
    item: NamedImage, result: Prediction, precision: str, output_dir: Path, stem: str | None
) -> dict[str, Any]:
    """The table row of one input predicted in ``precision``, its mask and overlay written under
    ``stem`` (None: not written)."""
    row: dict[str, Any] = {"name": item.name, "source": item.source}
    if result.error is not None:
        return {**row, "error": result.error}
    row.update(width=result.image.width, height=result.image.height)
    row.update(fake_probability=result.fake_probability, manipulated_fraction=result.manipulated_fraction)
    row.update(threshold=result.threshold, precision=precision)
    if stem is not None and result.mask is not None:
        pictures.save_png(result.mask_image(), output_dir / "masks" / f"{stem}.png", PNG_LEVEL)
        pictures.save_png(result.overlay(), output_dir / "overlays" / f"{stem}.png", PNG_LEVEL)
        row["mask"] = f"masks/{stem}.png"
    return row


def _files_job(
    predictor: Predictor,
    units: Sequence[Unit],
    bounds: tuple[int, int],
    output_dir: Path,
    settings: JobSettings,
    runtime: Runtime,
) -> JobSummary:
    """Predict this process's units (``bounds``) into pictures and a table; process 0 merges the tables."""
    everything = read_inputs(units)
    offset = sum(unit.count for unit in units[: bounds[0]])
    count = sum(unit.count for unit in units[bounds[0] : bounds[1]])
    mine = everything[offset : offset + count]
    stems = unique_stems([item.name for item in everything])[offset : offset + count]
    rows: list[dict | None] = [None] * count
    summary = JobSummary()
    progress = JobProgress(count, len(everything), runtime.world_size, enabled=runtime.is_main)
    suffix = f"-{runtime.rank:05d}" if runtime.distributed else ""
    with_masks = settings.masks == "png"

    def file_row(found: tuple[int, NamedImage, Prediction]) -> tuple[int, dict[str, Any]]:
        position, item, result = found
        return position, _file_row(
            item, result, predictor.precision, output_dir, stems[position] if with_masks else None
        )

    predictions = _predictions(predictor, mine, settings)
    try:
        for position, row in in_threads(file_row, predictions, WRITER_THREADS, 2 * settings.batch_size):
            rows[position] = row
            summary.predicted += "error" not in row
            summary.skipped += "error" in row
            progress.update(1)
    finally:  # an interrupted run still leaves the table of what it did
        _write_tables([row for row in rows if row is not None], output_dir, suffix)
        progress.close()
    summary.seconds = progress.seconds
    job = _summary(runtime, summary)
    if runtime.distributed and runtime.is_main:
        merged = []
        for rank in range(runtime.world_size):
            part = output_dir / f"predictions-{rank:05d}.json"
            merged.extend(json.loads(part.read_text(encoding="utf-8")))
        _write_tables(merged, output_dir)
        for rank in range(runtime.world_size):
            for kind in ("csv", "json"):
                (output_dir / f"predictions-{rank:05d}.{kind}").unlink()
    job.written = [str(output_dir / "predictions.csv"), str(output_dir / "predictions.json")]
    return job


def _write_tables(rows: list[dict], output_dir: Path, suffix: str = "") -> None:
    table = io.StringIO()
    writer = csv.DictWriter(table, fieldnames=FIELDS)
    writer.writeheader()
    writer.writerows({k: row.get(k) for k in FIELDS} for row in rows)
    write_text(output_dir / f"predictions{suffix}.csv", table.getvalue())
    write_text(output_dir / f"predictions{suffix}.json", json.dumps(rows, indent=1) + "\n")
