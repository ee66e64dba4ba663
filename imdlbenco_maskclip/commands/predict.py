"""``benco predict``: masks, overlays and fake probabilities for images, folders or shards."""

from __future__ import annotations

import argparse
from dataclasses import replace

from PIL import Image

from imdlbenco_maskclip.commands import shared
from imdlbenco_maskclip.run_config import Option, parse_size

MAX_PIXELS = Option(
    "max_pixels", int, Image.MAX_IMAGE_PIXELS or 0,
    "images with more pixels are skipped with a warning (Pillow's MAX_IMAGE_PIXELS; 0: no limit)", metavar="N",
)
OPTIONS = [
    shared.CHECKPOINT,
    shared.CHECKPOINT_MODEL,
    replace(shared.IMAGE_SIZE, default=None, help="side the images are resized (or padded) to; unset: the checkpoint's run's, else 512"),
    replace(
        shared.PADDING,
        help="zero-pad to --image_size instead of resizing (a larger image is first shrunk to fit; "
        "masks come back at the original size); without it, as the checkpoint's run did",
    ),
    MAX_PIXELS,
    Option("batch_size", parse_size, 8, "images per step", metavar="N"),
    shared.DEVICE,
    Option("amp", str, "auto", "autocast on a GPU: auto (bf16 where supported, else fp16), off, bf16, fp16",
           choices=("auto", "off", "bf16", "fp16")),
    Option("num_workers", int, 0, "DataLoader worker processes", metavar="N"),
    Option("output_dir", str, "./predictions", "where masks/, overlays/ and predictions.csv/json go", metavar="DIR"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", metavar="INPUTS", help="image files, folders of images, or OpenSDI parquet shards")
    # Image paths and unknown model flags cannot be told apart, so model options come from the
    # checkpoint or the config here.
    shared.configure(parser, OPTIONS, model_flags=False)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imdlbenco_maskclip import run_config

    config = run_config.resolve(OPTIONS, args, args.config)
    values = config.values
    shared.require(values, "checkpoint")
    from imdlbenco_maskclip import photos, prediction
    from imdlbenco_maskclip.predictor import Predictor

    inputs = prediction.collect_inputs(args.inputs)
    max_pixels = photos.allow_pixels(values["max_pixels"])
    predictor = Predictor.from_checkpoint(
        values["checkpoint"], values["device"], values["image_size"], values["amp"],
        padding=True if values["if_padding"] else None, max_pixels=max_pixels, model_name=values["model"],
        **config.model_args,
    )
    output_dir = Path(values["output_dir"]).expanduser()
    rows = prediction.predict(predictor, inputs, output_dir, values["batch_size"], values["num_workers"])
    skipped = sum(1 for row in rows if row.get("error"))
    how = "padded" if predictor.padding else "resized"
    print(
        f"{type(predictor.model).__name__} at {predictor.image_size} px ({how}): {len(rows) - skipped} images predicted, "
        f"{skipped} skipped -> {output_dir}/masks, {output_dir}/overlays, {output_dir}/predictions.csv"
    )
    return 0
