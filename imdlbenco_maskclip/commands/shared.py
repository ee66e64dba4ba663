"""Options that several commands share, so each means the same everywhere."""

from __future__ import annotations

import argparse

from dataset_adapters.vocabulary import KNOWN_GENERATORS
from imdlbenco_maskclip.run_config import Option, parse_size

GENERATORS_HELP = f"{' '.join(KNOWN_GENERATORS)}, or any other the shards hold"

MODEL = Option("model", str, None, "registered model name, e.g. MaskCLIP or IML_ViT", metavar="NAME")
IMAGE_SIZE = Option("image_size", parse_size, 512, "side the images are resized (or padded) to", metavar="PX")
PADDING = Option("if_padding", None, False, "zero-pad to --image_size instead of resizing", flag=True)
DEVICE = Option("device", str, "auto", "auto, cpu, cuda or cuda:N")
NUM_WORKERS = Option("num_workers", int, 4, "DataLoader worker processes", metavar="N")
OUTPUT_DIR = Option("output_dir", str, "./output_dir", "where results are written", metavar="DIR")
CHECKPOINT = Option("checkpoint", str, None, "checkpoint written by benco train or by Benco's save_model", metavar="CKPT")
CHECKPOINT_MODEL = Option("model", str, None, "model name; default: the one the checkpoint records", metavar="NAME")


def configure(
    parser: argparse.ArgumentParser, options: list[Option], default_config: str | None = None, model_flags: bool = True
) -> None:
    """``--config``, one flag per option, and (with ``model_flags``) leftover flags kept for the
    model's own options."""
    parser.add_argument(
        "--config", default=default_config, metavar="YAML", help="run config: a path or the name of one in benco_configs/"
    )
    for option in options:
        option.add_to(parser)
    model_help = (
        "Model options (e.g. --setting tiny for MaskCLIP) follow the command's own flags; "
        "'benco train --model NAME --model-help' lists them."
        if model_flags
        else "Model options come from the checkpoint, or from 'model_args:' in --config."
    )
    parser.epilog = f"{model_help} Precedence: defaults < --config < flags."
    parser.set_defaults(accepts_model_flags=model_flags)


def require(values: dict, *names: str) -> None:
    """Settings without a default that the command cannot run without."""
    from imdlbenco_maskclip.errors import UserError

    for name in names:
        if not values[name]:
            raise UserError(f"--{name} is required (on the command line or as '{name}:' in --config)")
