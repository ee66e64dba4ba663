"""A ``benco test`` run: the protocol on a checkpoint, its perturbation levels, and the files
it leaves (tables, ``per_image.csv`` and ``opensdi_report.html``).

``run_test`` scores (in every process under torchrun); ``recorded_result`` adds what the files
record beyond the scores (the data's fingerprints, the intervals) and ``write_outputs`` is the
end of a test run, both shared by ``benco test`` and ``benco demo``, so both leave the same files.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from imdlbenco_maskclip.checkpoints.layout import TrainingState
from imdlbenco_maskclip.checkpoints.loading import for_command
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.common.precision import INFERENCE, autocast_dtype, precision_name
from imdlbenco_maskclip.evaluation import bootstrap, protocol, report, tables
from imdlbenco_maskclip.evaluation.config import TestConfig
from imdlbenco_maskclip.evaluation.perturbations import PerturbImage, parse_specs
from imdlbenco_maskclip.host.datasets import (
    DatasetOptions,
    fingerprint,
    protocol_datasets,
    same_data,
    split_named,
)
from imdlbenco_maskclip.host.runtime import Runtime


@dataclass
class TestRun:
    """What a test run found: the clean result (with its intervals and fingerprints on the main
    process), each perturbation level's, the examples the report shows (main process only),
    the model's name, what its checkpoint records, how the intervals were drawn (``intervals``),
    where the weights came from, the image size and padding used and the precision the model
    computed in (``float32``, ``bfloat16``, ``float16``)."""

    __test__ = False  # not a pytest test class

    result: protocol.ProtocolResult
    perturbed: dict[str, protocol.ProtocolResult]
    examples: list[report.Example]
    model_name: str
    recorded: TrainingState
    audit: Path | None
    intervals: bootstrap.Settings
    source: dict[str, Any]
    """Where the weights came from (``Checkpoint.source``: for a hub reference its revision and sha256)."""
    image_size: int
    padding: bool
    precision: str


def recorded_result(
    result: protocol.ProtocolResult, datasets: Mapping[str, Dataset], settings: bootstrap.Settings
) -> protocol.ProtocolResult:
    """``result`` with what the files record beyond the scores: each split's data fingerprint
    and each figure's 95% interval."""
    result = dataclasses.replace(result, fingerprints={split: fingerprint(d) for split, d in datasets.items()})
    return bootstrap.with_intervals(result, settings)


def run_test(config: TestConfig, model_args: dict[str, Any], model_flags: Sequence[str], runtime: Runtime) -> TestRun:
    """Score the checkpoint of ``config`` on its test data, clean and at each ``--perturb``
    level; model options: recorded < ``model_args`` < ``model_flags``. ``--amp auto`` follows
    the inference rule (bf16 on a CPU that computes it); the default ``off`` is fp32."""
    levels = parse_specs(config.perturb or [])
    audit = report.find_audit(config.test_data_path, config.audit)
    loaded = for_command(config.checkpoint, config.model, model_args, model_flags, config.image_size, config.if_padding)
    model = loaded.model.to(runtime.device)
    options = DatasetOptions(loaded.image_size, loaded.padding)
    amp = autocast_dtype(config.amp, runtime.device, INFERENCE)

    def score(dataset_options: DatasetOptions, curves: bool = False) -> tuple[protocol.ProtocolResult, dict]:
        datasets = protocol_datasets(config.test_data_path, dataset_options, config.generators)
        scored = protocol.evaluate(
            model, datasets, runtime, config.test_batch_size, config.num_workers, amp, curves=curves
        )
        return scored, datasets

    result, datasets = score(options, curves=True)
    recorded = loaded.recorded
    if recorded.val_threshold is not None:
        if recorded.val_threshold not in protocol.THRESHOLDS:
            raise UserError(
                f"--checkpoint {config.checkpoint}: its val_threshold {recorded.val_threshold} is not one of "
                f"{protocol.THRESHOLDS[0]}..{protocol.THRESHOLDS[-1]} in steps of 0.05"
            )
        result = protocol.at_val_threshold(result, recorded.val_threshold)
    settings = bootstrap.Settings(config.bootstrap, config.bootstrap_seed)
    if runtime.is_main:
        result = recorded_result(result, datasets, settings)
    examples = (
        report.render_examples(model, datasets, report.choose_examples(result.records), runtime.device)
        if runtime.is_main
        else []
    )
    perturbed: dict[str, protocol.ProtocolResult] = {}
    for number, level in enumerate(levels, 1):
        if runtime.is_main:
            print(f"benco test: perturbation {number}/{len(levels)}: {level.key}", file=sys.stderr, flush=True)
        transform = PerturbImage(level, config.perturb_seed)
        perturbed[level.key], _ = score(dataclasses.replace(options, transforms=transform))
    return TestRun(
        result,
        perturbed,
        examples,
        loaded.name,
        recorded,
        audit,
        settings,
        loaded.source,
        loaded.image_size,
        loaded.padding,
        precision_name(amp),
    )


def write_outputs(
    result: protocol.ProtocolResult,
    output_dir: Path,
    model_name: str,
    checkpoint: str,
    examples: Sequence[report.Example],
    facts: Mapping[str, Any],
    device: torch.device,
    precision: str = "float32",
    *,
    compare_paper: bool = False,
    selected_on: str | None = None,
    notes: Sequence[str] = (),
    perturbed: Mapping[str, protocol.ProtocolResult] | None = None,
    perturb_seed: int | None = None,
    audit: Path | None = None,
    intervals: bootstrap.Settings | None = None,
    source: Mapping[str, Any] | None = None,
) -> list[Path]:
    """The end of a test run: ``opensdi_results.{json,md,csv}``, ``per_image.csv`` and the
    report, whose facts are ``facts`` (model, checkpoint, data...) plus the counts, device,
    ``precision`` (what the model computed in), date and versions; ``intervals``: how
    ``result``'s intervals were drawn; ``source`` (``Checkpoint.source``) records a hub
    checkpoint's revision and sha256 in the JSON and Markdown. Returns the paths written."""
    written = tables.write_results(
        result,
        output_dir,
        model_name,
        checkpoint,
        compare_paper,
        selected_on,
        notes,
        perturbed or None,
        perturb_seed,
        intervals,
        source=source,
        precision=precision,
    )
    all_facts = {**facts, **report.run_facts(result, device, precision)}
    written.append(report.write_report(output_dir, result.records, examples, all_facts, audit, notes))
    return written


def selection_warnings(selection: dict[str, Any] | None, test_paths: Sequence[str], rows: Sequence[str]) -> list[str]:
    """A warning for each scored row that the checkpoint was chosen on (``selection_data`` of a
    ``--select_on test`` run): its score there is not a held-out result."""
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
