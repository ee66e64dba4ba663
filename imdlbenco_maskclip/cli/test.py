"""``benco test``: the OpenSDI protocol table for a checkpoint of any registered model."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imdlbenco_maskclip.cli import options
from imdlbenco_maskclip.cli.options import Option, parse_count, parse_seed, parse_size

OPTIONS = [
    options.CHECKPOINT,
    options.CHECKPOINT_MODEL,
    Option(
        "test_data_path",
        str,
        None,
        "test data: OpenSDI shards (one row per generator) and/or Benco Tp/Gt folders or JSON lists, each optionally NAME=PATH",
        many=True,
        metavar="PATH",
    ),
    Option(
        "generators",
        str,
        None,
        f"OpenSDI generators to test: {options.GENERATORS_HELP} (default: all present)",
        many=True,
    ),
    options.CHECKPOINT_IMAGE_SIZE,
    options.CHECKPOINT_PADDING,
    Option("test_batch_size", parse_size, 16, "images per step", metavar="N"),
    Option(
        "amp",
        str,
        "off",
        "autocast dtype: off (default: figures that do not depend on the machine), auto (GPU: bf16 where supported, "
        "else fp16; CPU: bf16 where the CPU computes it natively, else off), bf16, fp16",
        choices=("off", "auto", "bf16", "fp16"),
    ),
    Option("compare_paper", None, False, "print the paper's rows beside ours (and draw them in the report)", flag=True),
    Option(
        "audit",
        str,
        None,
        "a 'benco opensdi audit' result (audit.json or its folder) for the report; default: one beside the test data",
        metavar="PATH",
    ),
    Option(
        "perturb",
        str,
        None,
        "robustness levels, each scored again on the same images after the clean run: jpeg:QUALITY, blur:KERNEL (odd), "
        "noise:STD (0-255 scale), resize:FACTOR (down and back up); several values per kind comma-separated, "
        "e.g. jpeg:50,70 blur:3,7",
        many=True,
        metavar="KIND:V[,V...]",
    ),
    Option(
        "perturb_seed",
        parse_seed,
        0,
        "seed of the noise perturbation (with a hash of each image's pixels)",
        metavar="N",
    ),
    Option(
        "bootstrap",
        parse_count,
        1000,
        "resamples of the 95%% intervals written beside each figure (percentile bootstrap over images); 0: none",
        metavar="N",
    ),
    Option("bootstrap_seed", parse_seed, 0, "seed of the bootstrap resamples", metavar="N"),
    options.DEVICE,
    options.NUM_WORKERS,
    Option(
        "output_dir",
        str,
        None,
        "where the tables go (default: the checkpoint's folder; for a hub checkpoint ./opensdi_results/<its name>)",
        metavar="DIR",
    ),
]


def configure(parser: argparse.ArgumentParser) -> None:
    options.configure(parser, OPTIONS)


def default_output_dir(checkpoint: str) -> Path:
    """Where results go without ``--output_dir``: beside a local checkpoint; for a hub
    reference ``./opensdi_results/<file stem or folder name>``, never the hub cache."""
    from imdlbenco_maskclip.checkpoints.hub import is_reference, short_name

    if is_reference(checkpoint):
        return Path("opensdi_results") / short_name(checkpoint)
    return Path(checkpoint).expanduser().parent


def run(args: argparse.Namespace) -> int:
    from imdlbenco_maskclip.evaluation.config import TestConfig

    resolved = options.resolve(OPTIONS, args, args.config)
    options.require(resolved.values, "checkpoint", "test_data_path")
    config = options.typed(TestConfig, OPTIONS, resolved.values)
    from imdlbenco_maskclip.evaluation import tables, test_run
    from imdlbenco_maskclip.host.runtime import start_runtime, stop_runtime

    runtime = start_runtime(config.device)
    try:
        run_ = test_run.run_test(config, resolved.model_args, args.model_flags, runtime)
    finally:
        stop_runtime(runtime)
    if not runtime.is_main:
        return 0
    result, name, recorded = run_.result, run_.model_name, run_.recorded
    output_dir = Path(config.output_dir or default_output_dir(config.checkpoint))
    selected_on = recorded.selected_on
    notes = test_run.selection_warnings(recorded.selection_data, config.test_data_path, [r.split for r in result.rows])
    for note in notes:
        print(f"benco test: warning: {note}", file=sys.stderr)
    print(f"\nOpenSDI protocol, {name}, {config.checkpoint} (selected on: {selected_on or 'not recorded'})\n")
    print(tables.result_table(result))
    if config.compare_paper:
        print("\n" + tables.paper_comparison(result, name))
    if run_.perturbed:
        print(f"\nPerturbations (noise seed {config.perturb_seed}), means over the splits:\n")
        print(tables.perturbation_table(result, run_.perturbed))
    facts = {
        "model": name,
        "model options": ", ".join(
            f"{k}={v}" for k, v in sorted({**recorded.model_args, **resolved.model_args}.items())
        )
        or "-",
        "checkpoint": config.checkpoint,
        **{f"checkpoint {key}": value for key, value in run_.source.items() if key in ("revision", "sha256")},
        "selected on": selected_on or "not recorded in the checkpoint",
        "test data": " ".join(config.test_data_path),
        "image size": f"{run_.image_size} ({'padded' if run_.padding else 'resized'})",
    }
    written = test_run.write_outputs(
        result,
        output_dir,
        name,
        str(config.checkpoint),
        run_.examples,
        facts,
        runtime.device,
        run_.precision,
        compare_paper=config.compare_paper,
        selected_on=selected_on,
        notes=notes,
        perturbed=run_.perturbed,
        perturb_seed=config.perturb_seed,
        audit=run_.audit,
        intervals=run_.intervals,
        source=run_.source,
    )
    print("\nWrote " + ", ".join(str(p) for p in written))
    return 0
