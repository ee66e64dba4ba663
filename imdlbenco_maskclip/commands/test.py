"""``benco test``: the OpenSDI protocol table for a checkpoint of any registered model."""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Sequence

from imdlbenco_maskclip.commands import shared
from imdlbenco_maskclip.run_config import Option, parse_seed, parse_size

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
    Option("compare_paper", None, False, "print the paper's rows beside ours (and draw them in the report)", flag=True),
    Option("audit", str, None, "a 'benco opensdi audit' result (audit.json or its folder) for the report; "
           "default: one beside the test data", metavar="PATH"),
    Option(
        "perturb", str, None,
        "robustness levels, each scored again on the same images after the clean run: jpeg:QUALITY, blur:KERNEL (odd), "
        "noise:STD (0-255 scale), resize:FACTOR (down and back up); several values per kind comma-separated, "
        "e.g. jpeg:50,70 blur:3,7",
        many=True, metavar="KIND:V[,V...]",
    ),
    Option("perturb_seed", parse_seed, 0, "seed of the noise perturbation (with a hash of each image's pixels)", metavar="N"),
    shared.DEVICE,
    shared.NUM_WORKERS,
    Option("output_dir", str, None, "where the tables go (default: the checkpoint's folder)", metavar="DIR"),
]


def configure(parser: argparse.ArgumentParser) -> None:
    shared.configure(parser, OPTIONS)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from imdlbenco_maskclip import run_config
    from imdlbenco_maskclip.perturbations import PerturbImage, parse_specs

    config = run_config.resolve(OPTIONS, args, args.config)
    values = config.values
    shared.require(values, "checkpoint", "test_data_path")
    levels = parse_specs(values["perturb"] or [])

    import torch

    from imdlbenco_maskclip import distributed, model_builder, protocol, report, reporting
    from imdlbenco_maskclip.data_sources import DatasetOptions, protocol_datasets

    audit = report.find_audit(values["test_data_path"], values["audit"])
    runtime = distributed.start(values["device"])
    try:
        model, name, recorded = model_builder.from_checkpoint(
            values["checkpoint"], values["model"], config.model_args, args.model_flags, values["image_size"]
        )
        model.to(runtime.device)
        options = DatasetOptions(values["image_size"], bool(values["if_padding"]))
        amp = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(values["amp"]) if runtime.device.type == "cuda" else None

        def score(dataset_options: DatasetOptions, curves: bool = False) -> tuple[protocol.ProtocolResult, dict]:
            datasets = protocol_datasets(values["test_data_path"], dataset_options, values["generators"])
            scored = protocol.evaluate(
                model, datasets, runtime, values["test_batch_size"], values["num_workers"], amp, curves=curves
            )
            return scored, datasets

        result, datasets = score(options, curves=True)
        examples = (
            report.render_examples(model, datasets, report.choose_examples(result.records), runtime.device)
            if runtime.is_main else []
        )
        perturbed: dict[str, protocol.ProtocolResult] = {}
        for number, level in enumerate(levels, 1):
            if runtime.is_main:
                print(f"benco test: perturbation {number}/{len(levels)}: {level.key}", file=sys.stderr, flush=True)
            transform = PerturbImage(level, values["perturb_seed"])
            perturbed[level.key], _ = score(dataclasses.replace(options, transforms=transform))
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
    if perturbed:
        print(f"\nPerturbations (noise seed {values['perturb_seed']}), means over the splits:\n")
        print(reporting.perturbation_table(result, perturbed))
    written = reporting.write_results(
        result, output_dir, name, str(values["checkpoint"]), bool(values["compare_paper"]), selected_on, notes,
        perturbed or None, values["perturb_seed"],
    )
    facts = {
        "model": name,
        "model options": ", ".join(f"{k}={v}" for k, v in sorted({**recorded.model_args, **config.model_args}.items())) or "-",
        "checkpoint": values["checkpoint"],
        "selected on": selected_on or "not recorded in the checkpoint",
        "test data": " ".join(values["test_data_path"]),
        "image size": values["image_size"],
        **report.run_facts(result, runtime.device, values["amp"]),
    }
    written.append(report.write_report(output_dir, result.records, examples, facts, audit, notes))
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
