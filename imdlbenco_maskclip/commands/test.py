"""``benco test``: the OpenSDI protocol table for a checkpoint of any registered model."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from imdlbenco_maskclip.commands import shared
from imdlbenco_maskclip.run_config import Option, parse_size

OPTIONS = [
    shared.CHECKPOINT,
    shared.CHECKPOINT_MODEL,
    Option(
        "test_data_path", str, None,
        "test data: OpenSDI shards (one row per generator) and/or Benco Tp/Gt folders or JSON lists, each optionally NAME=PATH",
        many=True, metavar="PATH",
    ),
    Option("generators", str, None, f"OpenSDI generators to test: {shared.GENERATORS_HELP} (default: all present)", many=True),
    shared.IMAGE_SIZE,
    shared.PADDING,
    Option("test_batch_size", parse_size, 16, "images per step", metavar="N"),
    Option("amp", str, "off", "autocast on CUDA for speed: bf16, fp16 or off", choices=("bf16", "fp16", "off")),
    Option("compare_paper", None, False, "print the paper's rows beside ours", flag=True),
    shared.DEVICE,
    shared.NUM_WORKERS,
    Option("output_dir", str, None, "where the tables go (default: the checkpoint's folder)", metavar="DIR"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    shared.configure(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imdlbenco_maskclip import run_config

    config = run_config.resolve(OPTIONS, args, args.config)
    values = config.values
    shared.require(values, "checkpoint", "test_data_path")

    import torch

    from imdlbenco_maskclip import distributed, model_builder, protocol, reporting
    from imdlbenco_maskclip.data_sources import DatasetOptions, protocol_datasets

    runtime = distributed.start(values["device"])
    try:
        model, name, recorded = model_builder.from_checkpoint(
            values["checkpoint"], values["model"], config.model_args, args.model_flags, values["image_size"]
        )
        model.to(runtime.device)
        datasets = protocol_datasets(
            values["test_data_path"], DatasetOptions(values["image_size"], bool(values["if_padding"])), values["generators"]
        )
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(values["amp"]) if runtime.device.type == "cuda" else None
        result = protocol.evaluate(model, datasets, runtime, values["test_batch_size"], values["num_workers"], amp)
    finally:
        distributed.stop(runtime)
    if not runtime.is_main:
        return 0
    output_dir = Path(values["output_dir"] or Path(values["checkpoint"]).expanduser().parent)
    selected_on = recorded.selected_on
    notes = selection_warnings(recorded.selection_data, values["test_data_path"], [r.split for r in result.rows])
    for note in notes:
        print(f"benco test: warning: {note}", file=sys.stderr)
    print(f"\nOpenSDI protocol, {name}, {values['checkpoint']} (selected on: {selected_on or 'not recorded'})\n")
    print(reporting.result_table(result))
    if values["compare_paper"]:
        print("\n" + reporting.paper_comparison(result, name))
    written = reporting.write_results(
        result, output_dir, name, str(values["checkpoint"]), bool(values["compare_paper"]), selected_on, notes
    )
    print("\nWrote " + ", ".join(str(p) for p in written))
    return 0


def selection_warnings(selection: dict[str, Any] | None, test_paths: Sequence[str], rows: Sequence[str]) -> list[str]:
    """A warning for each scored row that the checkpoint was chosen on (``selection_data`` of a
    ``--select_on test`` run): its score there is not a held-out result."""
    from imdlbenco_maskclip.data_sources import same_data, split_named

    if not selection:
        return []
    chosen = set(selection.get("rows") or [])
    notes = []
    for entry in test_paths:
        name, path = split_named(entry)
        if not same_data(path, split_named(selection["data_path"])[1]):
            continue
        for row in rows:
            generator = row.split("/", 1)[1] if name is not None and row.startswith(f"{name}/") else row
            if row in chosen or generator in chosen:
                notes.append(
                    f"the checkpoint was selected on {path} {generator} (--select_on test), which this run scores: "
                    f"its {row} row is not a held-out result"
                )
    return notes
