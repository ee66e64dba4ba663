"""The CPU demo: the OpenSDI protocol in miniature on the embedded synthetic sample.

Writes a small synthetic OpenSDI (training split: sd15; test splits: all five generators,
drawn from another seed), scores the untrained model, trains it with ``benco train``'s own
code, scores it again, and draws held-out partial fakes with both models' masks.

The console gets one line per phase (and the training's progress bars); Benco's per-step
log and the scoring's progress bars go to ``demo_log.txt`` in the output folder.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TextIO

import torch
from PIL import Image

from dataset_adapters.vocabulary import KNOWN_GENERATORS
from imdlbenco_maskclip.checkpoints.loading import for_command
from imdlbenco_maskclip.common import pictures
from imdlbenco_maskclip.evaluation import protocol, report, test_run
from imdlbenco_maskclip.evaluation.bootstrap import Settings
from imdlbenco_maskclip.host.datasets import DatasetOptions, protocol_datasets
from imdlbenco_maskclip.host.models import build_model
from imdlbenco_maskclip.host.runtime import Runtime
from imdlbenco_maskclip.inference.forward import forward
from imdlbenco_maskclip.training.config import TrainConfig
from imdlbenco_maskclip.training.loop import train
from imdlbenco_maskclip.training.reproducibility import seed_everything


@dataclass(frozen=True)
class Sample:
    """The embedded sample (``benco demo``'s own options): the images' side, and images per
    class in the training split and per class and generator in the test splits."""

    sample_size: int
    train_per_class: int
    test_per_class: int


@dataclass
class DemoResult:
    """Both tables and where everything went."""

    untrained: protocol.ProtocolResult
    trained: protocol.ProtocolResult
    output_dir: Path
    picture: Path
    report: Path
    checkpoint: Path
    log: Path


def write_sample(root: Path, sample: Sample, seed: int) -> tuple[Path, Path]:
    """The embedded sample: deterministic synthetic shards, written once and reused."""
    from dataset_adapters.synthetic import write_synthetic_opensdi

    train_root, test_root = root / "train", root / "test"
    if not (train_root / "data").is_dir():
        write_synthetic_opensdi(
            train_root,
            generators=("sd15",),
            n_per_class=sample.train_per_class,
            image_size=sample.sample_size,
            seed=seed,
        )
    if not (test_root / "data").is_dir():
        write_synthetic_opensdi(
            test_root,
            generators=KNOWN_GENERATORS,
            n_per_class=sample.test_per_class,
            image_size=sample.sample_size,
            seed=seed + 1,
        )
    return train_root, test_root


def _examples(
    models: list[torch.nn.Module], datasets: dict, per_split: int
) -> tuple[list[list[Image.Image]], list[str]]:
    """Rows of [image, truth, each model's mask] for the first partial fakes of each split,
    and the split of each row."""
    from torch.utils.data import default_collate

    rows, labels = [], []
    for split, dataset in datasets.items():
        shown = 0
        for index in range(len(dataset)):
            if shown == per_split:
                break
            sample = dataset[index]
            if sample["label"] != 1 or bool(sample["mask"].min() == 1):
                continue
            row = [pictures.dataset_image(sample["image"])]
            row.append(pictures.probability_png(sample["mask"][0].numpy()))
            for model in models:
                mask = forward(model, default_collate([sample]))["pred_mask"][0, 0].float().numpy()
                row.append(pictures.probability_png(mask))
            rows.append(row)
            labels.append(split)
            shown += 1
    return rows, labels


@contextlib.contextmanager
def _phase(title: str, log: TextIO, runtime: Runtime, progress_bars: bool = False) -> Iterator[None]:
    """Say ``title`` on the console, send what the phase prints to ``log`` (its progress bars
    too, unless ``progress_bars``), then say how long it took."""
    started = time.time()
    if runtime.is_main:
        print(f"{title} ...", flush=True)
    log.write(f"\n== {title}\n")
    with (
        contextlib.redirect_stdout(log),
        contextlib.nullcontext() if progress_bars else contextlib.redirect_stderr(log),
    ):
        yield
    log.flush()
    if runtime.is_main:
        print(f"  done in {time.time() - started:.0f} s", flush=True)


def run_demo(config: TrainConfig, sample: Sample, model_args: dict[str, Any], runtime: Runtime) -> DemoResult:
    """The whole demo; ``config`` holds ``benco demo``'s training settings, its ``output_dir``
    the demo's folder."""
    output_dir = Path(config.output_dir).expanduser()
    output_dir.mkdir(parents=True, exist_ok=True)
    log_path = output_dir / "demo_log.txt"
    with open(log_path, "a", encoding="utf-8") as log:
        return _run(config, sample, model_args, runtime, output_dir, log, log_path)


def _run(
    config: TrainConfig,
    sample: Sample,
    model_args: dict[str, Any],
    runtime: Runtime,
    output_dir: Path,
    log: TextIO,
    log_path: Path,
) -> DemoResult:
    train_root, test_root = write_sample(output_dir / "data", sample, config.seed)
    tests = protocol_datasets([str(test_root)], DatasetOptions(config.image_size), None)
    if runtime.is_main:
        print(f"Benco's step-by-step log goes to {log_path}")

    seed_everything(config.seed + runtime.rank)
    untrained_model = build_model(config.model, model_args)
    with _phase(f"Scoring {config.model} before training, on {len(tests)} held-out splits", log, runtime):
        untrained = protocol.evaluate(untrained_model, tests, runtime, config.test_batch_size)

    training_run = replace(
        config,
        data_path=str(train_root),
        generators=None,
        test_data_path=str(test_root),
        test_generators=["sd15"],
        test_period=config.epochs,
        output_dir=str(output_dir / "run"),
    )
    with _phase(f"Training it for {config.epochs} epochs on {runtime.device}", log, runtime, progress_bars=True):
        result = train(training_run, model_args, runtime)
    trained_model = for_command(str(result.last_checkpoint), config.model, {}, [], config.image_size).model
    intervals = Settings()
    with _phase("Scoring the trained model", log, runtime):
        trained = protocol.evaluate(trained_model, tests, runtime, config.test_batch_size, curves=True)
        trained = test_run.recorded_result(trained, tests, intervals)

    results_dir = output_dir / "results"
    examples = report.render_examples(trained_model, tests, report.choose_examples(trained.records), runtime.device)
    facts = {
        "model": config.model,
        "model options": ", ".join(f"{k}={v}" for k, v in sorted(model_args.items())) or "-",
        "checkpoint": result.last_checkpoint,
        "trained on": f"{train_root}, {config.epochs} epochs (benco demo)",
        "test data": test_root,
        "image size": config.image_size,
    }
    written = test_run.write_outputs(
        trained,
        results_dir,
        config.model,
        str(result.last_checkpoint),
        examples,
        facts,
        runtime.device,
        intervals=intervals,
    )
    report_path = written[-1]
    rows, labels = _examples([untrained_model, trained_model], tests, per_split=2)
    picture = output_dir / "pictures" / "held_out_partial_fakes.png"
    pictures.save_png(pictures.grid(rows, ["image", "truth", "untrained", "trained"], labels), picture)
    return DemoResult(untrained, trained, output_dir, picture, report_path, result.last_checkpoint, log_path)
