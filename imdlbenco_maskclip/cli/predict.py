"""``benco predict``: masks, overlays and fake probabilities for images, folders or shards."""

from __future__ import annotations

import argparse
from dataclasses import replace
from typing import TYPE_CHECKING

from PIL import Image

from imdlbenco_maskclip.cli import options
from imdlbenco_maskclip.cli.options import Option, parse_size

if TYPE_CHECKING:
    from imdlbenco_maskclip.cli.options import RunConfig
    from imdlbenco_maskclip.inference.predictor import Predictor

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
    replace(
        options.IMAGE_SIZE,
        default=None,
        help="side the images are resized (or padded) to; unset: the checkpoint's run's, else 512",
    ),
    replace(
        options.PADDING,
        help="zero-pad to --image_size instead of resizing (a larger image is first shrunk to fit; "
        "masks come back at the original size); without it, as the checkpoint's run did",
    ),
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
    Option("num_workers", int, 0, "DataLoader worker processes", metavar="N"),
    Option("output_dir", str, "./predictions", "where masks/, overlays/ and predictions.csv/json go", metavar="DIR"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "inputs", nargs="+", metavar="INPUTS", help="image files, folders of images, or OpenSDI parquet shards"
    )
    # Image paths and unknown model flags cannot be told apart, so model options come from the
    # checkpoint or the config here.
    options.configure(parser, OPTIONS, model_flags=False)


def build_predictor(config: RunConfig) -> Predictor:
    """The ``Predictor`` that ``benco predict`` and ``benco serve`` options describe: the
    checkpoint's model (``--model`` and ``model_args:`` override what it records) at
    ``--image_size`` (else the run's), padded with ``--if_padding`` (else as the run did), with
    ``--max_pixels`` as this process's limit."""
    from imdlbenco_maskclip.inference import photos
    from imdlbenco_maskclip.inference.predictor import Predictor

    values = config.values
    options.require(values, "checkpoint")
    return Predictor.from_checkpoint(
        values["checkpoint"],
        values["device"],
        values["image_size"],
        values["amp"],
        padding=True if values["if_padding"] else None,
        max_pixels=photos.allow_pixels(values["max_pixels"]),
        model_name=values["model"],
        **config.model_args,
    )


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    config = options.resolve(OPTIONS, args, args.config)
    values = config.values
    options.require(values, "checkpoint")
    from imdlbenco_maskclip.inference import batch

    inputs = batch.collect_inputs(args.inputs)
    predictor = build_predictor(config)
    output_dir = Path(values["output_dir"]).expanduser()
    rows = batch.predict(predictor, inputs, output_dir, values["batch_size"], values["num_workers"])
    skipped = sum(1 for row in rows if row.get("error"))
    how = "padded" if predictor.padding else "resized"
    print(
        f"{type(predictor.model).__name__} at {predictor.image_size} px ({how}): {len(rows) - skipped} images predicted, "
        f"{skipped} skipped -> {output_dir}/masks, {output_dir}/overlays, {output_dir}/predictions.csv"
    )
    return 0
