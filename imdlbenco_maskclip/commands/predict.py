"""``benco predict``: masks, overlays and fake probabilities for images, folders or shards."""

from __future__ import annotations

import argparse

from imdlbenco_maskclip.commands import shared
from imdlbenco_maskclip.run_config import Option, parse_size

OPTIONS = [
    shared.CHECKPOINT,
    shared.CHECKPOINT_MODEL,
    shared.IMAGE_SIZE,
    shared.PADDING,
    Option("batch_size", parse_size, 8, "images per step", metavar="N"),
    shared.DEVICE,
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

    from imdlbenco_maskclip import model_builder, prediction, run_config
    from imdlbenco_maskclip.distributed import resolve_device

    config = run_config.resolve(OPTIONS, args, args.config)
    values = config.values
    shared.require(values, "checkpoint")
    inputs = prediction.collect_inputs(args.inputs)
    device = resolve_device(values["device"])
    model, name = model_builder.from_checkpoint(
        values["checkpoint"], values["model"], config.model_args, args.model_flags, values["image_size"]
    )
    model.to(device)
    output_dir = Path(values["output_dir"]).expanduser()
    rows = prediction.predict(
        model, inputs, output_dir, values["image_size"], bool(values["if_padding"]), device,
        values["batch_size"], values["num_workers"],
    )
    print(f"{name}: {len(rows)} images -> {output_dir}/masks, {output_dir}/overlays, {output_dir}/predictions.csv")
    return 0
