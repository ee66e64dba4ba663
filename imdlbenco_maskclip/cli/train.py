"""``benco train``: train any registered model on OpenSDI shards or Benco data."""

from __future__ import annotations

import argparse
from dataclasses import replace

from imdlbenco_maskclip.cli import options
from imdlbenco_maskclip.cli.options import Option, parse_rate, parse_size
from imdlbenco_maskclip.training.augmentations import AUGMENTATIONS
from imdlbenco_maskclip.training.config import TrainConfig

OPTIONS = [
    options.MODEL,
    Option(
        "data_path",
        str,
        None,
        "training data: OpenSDI shard folder/files/hub id, Benco Tp/Gt folder or JSON list",
        metavar="PATH",
    ),
    Option(
        "generators",
        str,
        None,
        f"OpenSDI generators to train on: {options.GENERATORS_HELP} (default: all present)",
        many=True,
    ),
    Option(
        "test_data_path",
        str,
        None,
        "test data scored every --test_period epochs, same forms as --data_path (OpenSDI: partial fakes); chooses checkpoint-best.pth with --select_on test",
        metavar="PATH",
    ),
    Option(
        "test_generators",
        str,
        None,
        f"OpenSDI generators of --test_data_path to score: {options.GENERATORS_HELP} (default: all present)",
        many=True,
    ),
    Option(
        "select_on",
        str,
        "validation",
        "what checkpoint-best.pth is chosen on (pixel F1): validation (rows held out from --data_path, never trained on) or test (--test_data_path, the paper's practice)",
        choices=("validation", "test"),
    ),
    Option(
        "val_fraction",
        float,
        0.01,
        "fraction of the training rows held out for --select_on validation, chosen by a hash of each row's key or file name (the same in every run)",
    ),
    options.IMAGE_SIZE,
    options.PADDING,
    Option(
        "edge_mask_width", int, None, "edge band width for models with an edge loss (MaskCLIP, IML_ViT)", metavar="PX"
    ),
    Option("augment", str, "paper", "training augmentations", choices=AUGMENTATIONS),
    Option(
        "shuffle",
        str,
        "rowgroup",
        "training order of OpenSDI shards: rowgroup (shuffled within a moving window of 16 row groups, each read once per epoch) or global (any row after any other, reads a row group per sample); Benco data is always shuffled globally",
        choices=("rowgroup", "global"),
    ),
    Option("batch_size", parse_size, 16, "images per step per process", metavar="N"),
    Option("test_batch_size", parse_size, 16, "images per validation step", metavar="N"),
    Option("epochs", parse_size, 50, "epochs to train", metavar="N"),
    Option("lr", parse_rate, 1e-4, "peak learning rate (AdamW, cosine to --min_lr)"),
    Option("min_lr", parse_rate, 0.0, "final learning rate of the cosine schedule"),
    Option("warmup_epochs", parse_rate, 0.0, "linear warm-up epochs before the cosine"),
    Option("weight_decay", parse_rate, 0.05, "AdamW weight decay"),
    Option("accum_iter", parse_size, 1, "gradient accumulation steps", metavar="N"),
    Option(
        "global_batch_size",
        parse_size,
        None,
        "images per optimizer step over all processes: sets --accum_iter to GLOBAL / (--batch_size x processes)",
        metavar="N",
    ),
    Option("test_period", parse_size, 1, "validate every N epochs (and after the last)", metavar="N"),
    Option("save_period", int, 0, "also keep checkpoint-EPOCH.pth every N epochs (0: never)", metavar="N"),
    Option("log_per_epoch_count", parse_size, 20, "tensorboard loss points per epoch", metavar="N"),
    Option(
        "amp",
        str,
        "auto",
        "autocast dtype: auto (CUDA: bf16 where supported, else fp16 with loss scaling; CPU: off), bf16, fp16 (with loss scaling) or off (fp32)",
        choices=("auto", "bf16", "fp16", "off"),
    ),
    Option(
        "if_predict_label",
        None,
        False,
        "passed to models that train a detection head on request (Benco's flag)",
        flag=True,
    ),
    Option("find_unused_parameters", None, False, "DDP's find_unused_parameters", flag=True),
    options.DEVICE,
    Option("seed", int, 42, "random seed"),
    Option(
        "deterministic",
        None,
        False,
        "deterministic kernels and one CPU thread, so a run's weights do not depend on the process, machine load or core count (slower)",
        flag=True,
    ),
    Option(
        "verbose",
        None,
        False,
        "print Benco's per-step log instead of a progress bar (else it goes to OUTPUT_DIR/train_log.txt)",
        flag=True,
    ),
    Option(
        "resume", str, "", "checkpoint to resume from, or 'auto' for OUTPUT_DIR/checkpoint-last.pth", metavar="CKPT"
    ),
    options.NUM_WORKERS,
    options.OUTPUT_DIR,
    Option("log_dir", str, None, "tensorboard folder (default: OUTPUT_DIR/tensorboard)", metavar="DIR"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    options.configure(parser, OPTIONS)
    parser.add_argument("--model-help", action="store_true", help="list the chosen model's own options and exit")


def run(args: argparse.Namespace) -> int:
    resolved = options.resolve(OPTIONS, args, args.config)
    options.require(resolved.values, "model")
    if not args.model_help:
        options.require(resolved.values, "data_path")
    from imdlbenco_maskclip.host import models
    from imdlbenco_maskclip.host.runtime import start_runtime, stop_runtime
    from imdlbenco_maskclip.training import reproducibility
    from imdlbenco_maskclip.training.loop import train

    if args.model_help:
        print(models.model_options_help(resolved.values["model"]))
        return 0
    config = options.typed(TrainConfig, OPTIONS, resolved.values)
    model_args = models.parse_model_args(config.model, resolved.model_args, args.model_flags, config.image_size)
    if config.deterministic:
        reproducibility.make_deterministic()
    runtime = start_runtime(config.device)
    try:
        if config.global_batch_size is not None:
            config = replace(
                config, accum_iter=_accumulation(config, resolved.sources["accum_iter"], runtime.world_size)
            )
        result = train(config, model_args, runtime)
    finally:
        stop_runtime(runtime)
    if runtime.is_main:
        best = (
            f"; best pixel F1 {result.best_metric:.4f} ({result.selected_on}) in {result.best_checkpoint}"
            if result.best_checkpoint
            else ""
        )
        print(f"Done: {result.last_checkpoint}{best}")
    return 0


def _accumulation(config: TrainConfig, accum_iter_source: str, world_size: int) -> int:
    """The accumulation steps ``--global_batch_size`` asks for; an ``--accum_iter`` given as
    well (``accum_iter_source`` says where from) must agree."""
    from imdlbenco_maskclip.common.errors import UserError
    from imdlbenco_maskclip.training.loop import accumulation_steps

    steps = accumulation_steps(config.global_batch_size, config.batch_size, world_size)
    if accum_iter_source != "default" and config.accum_iter != steps:
        raise UserError(
            f"--accum_iter {config.accum_iter} (from {accum_iter_source}) contradicts --global_batch_size "
            f"{config.global_batch_size} = --batch_size {config.batch_size} x {world_size} process(es) x {steps}; give one of them"
        )
    return steps
