"""``benco demo``: train the tiny MaskCLIP on the embedded synthetic sample on CPU, then test it."""

from __future__ import annotations

import argparse
from dataclasses import replace

from imdlbenco_maskclip.cli import options, train
from imdlbenco_maskclip.cli.options import Option, parse_size

_TRAIN = {option.name: option for option in train.OPTIONS}
_KEPT = (
    "model",
    "image_size",
    "edge_mask_width",
    "augment",
    "batch_size",
    "test_batch_size",
    "epochs",
    "lr",
    "min_lr",
    "warmup_epochs",
    "weight_decay",
    "accum_iter",
    "log_per_epoch_count",
    "amp",
    "if_predict_label",
    "find_unused_parameters",
    "seed",
    "num_workers",
    "log_dir",
)
SAMPLE_OPTIONS = [
    Option("sample_size", parse_size, 128, "side of the synthetic images", metavar="PX"),
    Option("train_per_class", parse_size, 64, "training images per real/fake and entire/partial", metavar="N"),
    Option("test_per_class", parse_size, 16, "test images per class and generator", metavar="N"),
]
OPTIONS = [
    *(_TRAIN[name] for name in _KEPT),
    replace(_TRAIN["device"], default="cpu"),
    replace(_TRAIN["output_dir"], default="./benco_demo"),
    *SAMPLE_OPTIONS,
]


def configure(parser: argparse.ArgumentParser) -> None:
    options.configure(parser, OPTIONS, default_config="cpu_demo")


def run(args: argparse.Namespace) -> int:
    from imdlbenco_maskclip.evaluation import tables
    from imdlbenco_maskclip.host import models
    from imdlbenco_maskclip.host.runtime import start_runtime, stop_runtime
    from imdlbenco_maskclip.training import demo_run
    from imdlbenco_maskclip.training.config import TrainConfig

    resolved = options.resolve(OPTIONS, args, args.config)
    config = options.typed(TrainConfig, train.OPTIONS, resolved.values)
    sample = options.typed(demo_run.Sample, SAMPLE_OPTIONS, resolved.values)
    model_args = models.parse_model_args(config.model, resolved.model_args, args.model_flags, config.image_size)
    runtime = start_runtime(config.device)
    try:
        result = demo_run.run_demo(config, sample, model_args, runtime)
    finally:
        stop_runtime(runtime)
    if not runtime.is_main:
        return 0
    print(f"\nUntrained {config.model} on the held-out synthetic test splits:\n")
    print(tables.result_table(result.untrained))
    print(f"\nAfter {config.epochs} epochs on the synthetic sd15 training split:\n")
    print(tables.result_table(result.trained))
    before, after = result.untrained.mean.pixel_f1, result.trained.mean.pixel_f1
    print(f"\nMean pixel F1 on held-out partial fakes: untrained {before:.4f} -> trained {after:.4f}")
    print(f"Pictures: {result.picture}")
    print(f"Report (open in a browser): {result.report}")
    print(f"Tables: {result.output_dir / 'results'}; checkpoint: {result.checkpoint}")
    print(f"Full log: {result.log}")
    return 0
