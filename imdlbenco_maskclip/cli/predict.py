"""``benco predict``: masks, overlays and fake probabilities for images, folders or shards, in one
process or under torchrun (``torchrun --nproc_per_node N -m imdlbenco_maskclip predict ...``)."""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from datetime import timedelta
from typing import TYPE_CHECKING

from PIL import Image

from imdlbenco_maskclip.cli import options
from imdlbenco_maskclip.cli.options import Option, parse_size

if TYPE_CHECKING:
    import torch

    from imdlbenco_maskclip.cli.options import RunConfig
    from imdlbenco_maskclip.inference.predictor import Predictor


def parse_probability(text: str) -> float:
    """A threshold on a probability: a number from 0 to 1."""
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise ValueError("must be a number from 0 to 1")
    return value


THRESHOLD = Option(
    "threshold",
    parse_probability,
    None,
    "probability above which a pixel counts as edited (overlays, manipulated fraction); "
    "unset: the checkpoint's val_threshold (chosen on held-out validation), else 0.5",
)

COLLECTIVE_TIMEOUT = timedelta(days=7)
"""How long a process waits for the others at the end: after --resume the shares left can be
uneven. When a process fails, torchrun stops the others, not this timeout."""

MAX_PIXELS = Option(
    "max_pixels",
    int,
    Image.MAX_IMAGE_PIXELS or 0,
    "images with more pixels are skipped with a warning (Pillow's MAX_IMAGE_PIXELS; 0: no limit)",
    metavar="N",
)
OPTIONS = [
    options.CHECKPOINT,
    options.CHECKPOINT_MODEL,
    options.CHECKPOINT_IMAGE_SIZE,
    replace(
        options.CHECKPOINT_PADDING,
        help="zero-pad to --image_size instead of resizing (a larger image is first shrunk to fit; "
        "masks come back at the original size); unset (flag or config): as the checkpoint's run did",
    ),
    THRESHOLD,
    MAX_PIXELS,
    Option("batch_size", parse_size, 8, "images per step", metavar="N"),
    options.DEVICE,
    Option(
        "amp",
        str,
        "auto",
        "autocast dtype: auto (GPU: bf16 where supported, else fp16; CPU: bf16 where the CPU computes it natively, "
        "else off), off, bf16, fp16",
        choices=("auto", "off", "bf16", "fp16"),
    ),
    replace(options.NUM_WORKERS, help="DataLoader worker processes that read, decode and resize the images"),
    Option(
        "output_dir",
        str,
        "./predictions",
        "where masks/, overlays/ and predictions.csv/json (files) or predictions/part-*.parquet (parquet) go",
        metavar="DIR",
    ),
    Option(
        "format",
        str,
        "files",
        "files: a PNG mask and overlay per image and one CSV/JSON table (small runs); "
        "parquet: predictions/part-RRRRR-CCCCC.parquet with the masks inside, resumable (large runs)",
        choices=("files", "parquet"),
    ),
    Option(
        "masks",
        str,
        "png",
        "png: keep each mask (files: masks/ and overlays/; parquet: the mask column); none: only the numbers",
        choices=("png", "none"),
    ),
    Option("part_size", parse_size, 1000, "--format parquet: rows per part file", metavar="N"),
    Option(
        "resume",
        None,
        False,
        "--format parquet: continue a killed run in the same --output_dir (any number of processes): "
        "skip the inputs already in complete parts, remove unfinished ones",
        flag=True,
    ),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="image files, folders of images, or OpenSDI parquet shards"
    )
    # Image paths and unknown model flags cannot be told apart, so model options come from the
    # checkpoint or the config here.
    options.configure(parser, OPTIONS, model_flags=False)


def build_predictor(config: RunConfig, device: torch.device | None = None) -> Predictor:
    """The ``Predictor`` that ``benco predict`` and ``benco serve`` options describe: the
    checkpoint's model (``--model`` and ``model_args:`` override what it records) at
    ``--image_size`` (else the run's), padded with ``--if_padding`` (else as the run did), with
    ``--max_pixels`` as this process's limit and ``--threshold`` (else the checkpoint's), on
    ``device`` (else ``--device``)."""
    from imdlbenco_maskclip.inference import photos
    from imdlbenco_maskclip.inference.predictor import Predictor

    values = config.values
    options.require(values, "checkpoint")
    return Predictor.from_checkpoint(
        values["checkpoint"],
        device or values["device"],
        values["image_size"],
        values["amp"],
        padding=values["if_padding"],
        max_pixels=photos.allow_pixels(values["max_pixels"]),
        model_name=values["model"],
        threshold=values["threshold"],
        **config.model_args,
    )


def wait_passively() -> None:
    """Make OpenMP threads sleep while they wait, unless the user chose how (``OMP_WAIT_POLICY``
    or ``GOMP_SPINCOUNT``). On the CPU the model's OpenMP threads share the cores with the
    DataLoader workers and the mask-writer threads; spinning between parallel regions (GNU
    OpenMP's default) then leaves each region waiting for a thread that is not running.
    OpenMP reads this once, when torch is imported: after that, nothing is changed."""
    if "torch" not in sys.modules and not {"OMP_WAIT_POLICY", "GOMP_SPINCOUNT"} & set(os.environ):
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"


def _rate(images_per_second: float) -> str:
    return f"{images_per_second:,.1f}" if images_per_second >= 1 else f"{images_per_second:.3f}"


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    wait_passively()
    config = options.resolve(OPTIONS, args, args.config)
    values = config.values
    options.require(values, "checkpoint")
    from imdlbenco_maskclip.host.runtime import start_runtime, stop_runtime
    from imdlbenco_maskclip.inference import batch

    settings = batch.JobSettings(
        format=values["format"],
        masks=values["masks"],
        batch_size=values["batch_size"],
        num_workers=values["num_workers"],
        part_size=values["part_size"],
        resume=bool(values["resume"]),
    )
    output_dir = Path(values["output_dir"]).expanduser()
    units = batch.plan_job(args.inputs, output_dir, settings)
    runtime = start_runtime(values["device"], timeout=COLLECTIVE_TIMEOUT)
    try:
        predictor = build_predictor(config, runtime.device)
        summary = batch.run_job(predictor, units, output_dir, settings, runtime)
    finally:
        stop_runtime(runtime)
    if not runtime.is_main:
        return 0
    how = "padded" if predictor.padding else "resized"
    where = (
        f"{output_dir}/{batch.parts.FOLDER}/ ({len(summary.written)} new parts)"
        if settings.format == "parquet"
        else f"{output_dir}/predictions.csv"
        + (f", {output_dir}/masks, {output_dir}/overlays" if settings.masks == "png" else "")
    )
    earlier = f", {summary.already_done} predicted before (--resume)" if settings.resume else ""
    processes = f" by {summary.processes} processes" if summary.processes > 1 else ""
    print(
        f"{type(predictor.model).__name__} at {predictor.image_size} px ({how}, {predictor.precision}, threshold {predictor.threshold:g}): "
        f"{summary.predicted} images predicted, {summary.skipped} skipped{earlier}{processes}, "
        f"{_rate(summary.images_per_second)} images/s -> {where}"
    )
    return 0
