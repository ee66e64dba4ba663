"""Training on top of Benco's ``train_one_epoch``, validated by the protocol's own code.

What Benco's ``train.py`` lacks and this adds: one CPU process, one GPU or torchrun with NCCL
or gloo; atomic checkpoints every epoch (``checkpoint-last.pth``); ``checkpoint-best.pth``
(weights only) chosen by pixel F1 (computed by ``protocol``, as ``benco test`` computes it) on
a validation set held out from the training data, or on the test data as the paper did
(``--select_on test``), recorded in the checkpoint as ``selected_on``; ``--resume`` that
replays the same batches and augmentations (each epoch reseeds from the run seed and the
epoch number; see ``reproducibility``); ``--amp`` in the dtype asked for, with loss scaling
for fp16 only; a global batch set by gradient accumulation; a stop with one message in every
process when the loss stops being finite (``loss_guard``); and a quiet console (one bar and
one line per epoch; Benco's per-step log goes to ``train_log.txt``).

``train`` is a list of named steps: the data, the model and optimizer, the resume, then for
each epoch its training, validation, checkpoints and report.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from dataset_adapters import OpenSDIDataset, RowGroupBatchSampler, RowGroupShuffleSampler
from imdlbenco_maskclip.checkpoints import layout
from imdlbenco_maskclip.checkpoints.layout import TrainingState
from imdlbenco_maskclip.checkpoints.loading import load_weights
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.common.precision import autocast_dtype, precision_name
from imdlbenco_maskclip.evaluation import protocol
from imdlbenco_maskclip.host.datasets import (
    DatasetOptions,
    hold_out,
    open_dataset,
    protocol_datasets,
    resolved,
    split_named,
)
from imdlbenco_maskclip.host.models import build_model
from imdlbenco_maskclip.host.runtime import Runtime
from imdlbenco_maskclip.training.augmentations import train_transforms
from imdlbenco_maskclip.training.config import TrainConfig
from imdlbenco_maskclip.training.loss_guard import FiniteLossGuard
from imdlbenco_maskclip.training.progress import EpochProgress, summary_line
from imdlbenco_maskclip.training.reproducibility import epoch_seed, seed_everything

LAST = "checkpoint-last.pth"
BEST = "checkpoint-best.pth"
BENCO_LOG = "train_log.txt"


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    history: list[dict[str, Any]]
    selected_on: str | None = None


def accumulation_steps(global_batch_size: int, batch_size: int, world_size: int) -> int:
    """Steps to accumulate so that ``batch_size`` images in each of ``world_size`` processes
    make one optimizer step of ``global_batch_size`` images."""
    per_step = batch_size * world_size
    if global_batch_size % per_step:
        raise UserError(
            f"--global_batch_size {global_batch_size} is not a multiple of --batch_size {batch_size} x "
            f"{world_size} process(es) = {per_step} images per step; change --batch_size or the number of processes"
        )
    return global_batch_size // per_step


@dataclass
class TrainingData:
    """The training batches and the data each validation scores: ``val_sets`` choose
    ``checkpoint-best.pth``, ``score_sets`` are scored beside them."""

    train_set: Dataset
    loader: DataLoader
    val_sets: dict[str, Dataset]
    score_sets: dict[str, Dataset]
    selected_on: str | None
    selection_data: dict[str, Any] | None


@dataclass
class Learner:
    """The model as trained (DDP-wrapped under torchrun), the network inside it, AdamW,
    Benco's loss scaler, the loss guard and the autocast dtype (None: float32)."""

    model: torch.nn.Module
    network: torch.nn.Module
    optimizer: torch.optim.Optimizer
    loss_scaler: Any
    guard: FiniteLossGuard
    dtype: torch.dtype | None

    @property
    def precision(self) -> str:
        return precision_name(self.dtype)


@dataclass
class Standing:
    """Where a run stands: the next epoch to train, the best validation pixel F1 so far and
    every epoch's record."""

    next_epoch: int = 0
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)

    def add(self, record: dict[str, Any]) -> bool:
        """Add an epoch's record; True when its validation pixel F1 is the best so far."""
        self.history.append(record)
        is_best = "val_mean_pixel_f1" in record and (
            self.best_metric is None or record["val_mean_pixel_f1"] > self.best_metric
        )
        if is_best:
            self.best_metric = record["val_mean_pixel_f1"]
        return is_best


@dataclass
class Logs:
    """Where a run writes: its folder, tensorboard (main process only) and Benco's per-step
    prints (None: the console, with ``--verbose``)."""

    folder: Path
    tensorboard: Any
    benco_prints: Path | None

    def quiet(self) -> AbstractContextManager[Any]:
        """Benco's prints go to ``benco_prints`` while this is open."""
        from imdlbenco_maskclip.host import workarounds

        return workarounds.benco_prints_to(self.benco_prints) if self.benco_prints is not None else nullcontext()


@dataclass
class TrainingRun:
    """What the steps of each epoch share, set up by the first steps of ``train``; ``benco`` is
    the namespace Benco's ``train_one_epoch`` reads."""

    config: TrainConfig
    model_args: dict[str, Any]
    runtime: Runtime
    data: TrainingData
    learner: Learner
    logs: Logs
    benco: argparse.Namespace


def train(config: TrainConfig, model_args: dict[str, Any], runtime: Runtime) -> TrainResult:
    """Train ``config.model``, built with ``model_args``, as ``config`` says."""
    data = build_data(config, runtime)
    learner = build_model_and_optimizer(config, model_args, runtime)
    standing = resume(config, learner, runtime)
    logs = open_logs(config, runtime)
    run = TrainingRun(
        config, model_args, runtime, data, learner, logs, benco_args(config, runtime, learner.dtype is not None)
    )
    announce(run)
    started = time.time()
    for epoch in range(standing.next_epoch, config.epochs):
        epoch_started = time.time()
        record, images_per_second = train_epoch(run, epoch)
        validate(run, epoch, record)
        is_best = standing.add(record)
        save_checkpoints(run, standing, epoch, is_best)
        report_epoch(run, record, is_best, images_per_second, time.time() - epoch_started)
    return finish(run, standing, time.time() - started)


def build_data(config: TrainConfig, runtime: Runtime) -> TrainingData:
    """The training loader and what validation scores: with ``--select_on validation`` rows
    held out from the training data (``--test_data_path`` scored beside them), with
    ``--select_on test`` the test data."""
    post = _post_function(config.model)
    options = DatasetOptions(config.image_size, config.if_padding, config.edge_mask_width, None, post)
    train_set = open_dataset(
        config.data_path, replace(options, transforms=train_transforms(config.augment)), config.generators
    )
    test_sets = (
        protocol_datasets([config.test_data_path], options, config.test_generators, subset="localization")
        if config.test_data_path
        else {}
    )
    if config.select_on == "test":
        if not test_sets:
            raise UserError("--select_on test needs --test_data_path (the paper chose on OpenSDI_test sd15)")
        test_path = split_named(config.test_data_path)[1]
        selected_on = f"test: {Path(test_path.rstrip('/')).name} {' '.join(test_sets)}"
        selection_data = {"data_path": resolved(test_path), "rows": list(test_sets)}
        return TrainingData(
            train_set, _training_loader(train_set, config, runtime), test_sets, {}, selected_on, selection_data
        )
    held = hold_out(train_set, config.val_fraction)
    val_sets = {"validation": held.validation} if held.validation is not None else {}
    if not val_sets and runtime.is_main:
        print(
            f"--val_fraction {config.val_fraction}: the {held.description} include no partial fakes to score, "
            "so no checkpoint-best.pth is chosen; raise --val_fraction, or --select_on test"
        )
    selected_on = f"validation: {held.description}" if val_sets else None
    return TrainingData(
        held.train, _training_loader(held.train, config, runtime), val_sets, test_sets, selected_on, None
    )


def build_model_and_optimizer(config: TrainConfig, model_args: dict[str, Any], runtime: Runtime) -> Learner:
    """The model, seeded, on the run's device, watched by the loss guard and DDP-wrapped under
    torchrun; AdamW; Benco's loss scaler, scaling for fp16 only."""
    from timm.optim import create_optimizer_v2

    from imdlbenco_maskclip.host import workarounds

    dtype = autocast_dtype(config.amp, runtime.device)
    seed_everything(config.seed + runtime.rank)
    network = build_model(config.model, model_args).to(runtime.device)
    guard = FiniteLossGuard(runtime)
    network.register_forward_hook(guard)
    model = network
    if runtime.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            network,
            device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=config.find_unused_parameters,
        )
    optimizer = create_optimizer_v2(
        network, opt="adamw", lr=config.lr, weight_decay=config.weight_decay, betas=(0.9, 0.999)
    )
    loss_scaler = workarounds.loss_scaler(runtime.device.type, enabled=dtype == torch.float16)
    return Learner(model, network, optimizer, loss_scaler, guard, dtype)


def resume(config: TrainConfig, learner: Learner, runtime: Runtime) -> Standing:
    """With ``--resume``: the checkpoint's weights, optimizer and loss scale into ``learner``, and
    where its run stood; else (or with ``auto`` and no checkpoint yet) a run at epoch 0."""
    if not config.resume:
        return Standing()
    path = _output_dir(config) / LAST if config.resume == "auto" else Path(config.resume).expanduser()
    if config.resume == "auto" and not path.is_file():
        print(f"--resume auto: no {path} yet, starting from scratch")
        return Standing()
    saved = layout.read(path)
    load_weights(learner.network, saved.weights, str(path))
    if saved.optimizer is not None:
        learner.optimizer.load_state_dict(saved.optimizer)  # moves the state to the parameters' device
        _load_scaler(learner.loss_scaler, saved.scaler or {}, path, runtime)
    else:
        print(f"--resume: {path} holds weights only (a best checkpoint?): the optimizer starts afresh")
    standing = Standing(0 if saved.epoch is None else saved.epoch + 1, saved.best_metric, saved.history)
    learner.guard.saved(path, standing.next_epoch - 1)
    if runtime.is_main:
        _note_changes(saved, learner.precision, config)
        print(f"Resumed {path} at epoch {standing.next_epoch}")
    return standing


def open_logs(config: TrainConfig, runtime: Runtime) -> Logs:
    """The output folder and tensorboard (main process); Benco's per-step prints go to
    ``train_log.txt`` there (the other processes': nowhere) unless ``--verbose``."""
    from torch.utils.tensorboard import SummaryWriter

    folder = _output_dir(config)
    tensorboard = None
    if runtime.is_main:
        folder.mkdir(parents=True, exist_ok=True)
        tensorboard = SummaryWriter(
            log_dir=str(Path(config.log_dir).expanduser() if config.log_dir else folder / "tensorboard")
        )
    benco_prints = None if config.verbose else folder / BENCO_LOG if runtime.is_main else Path(os.devnull)
    return Logs(folder, tensorboard, benco_prints)


def announce(run: TrainingRun) -> None:
    """Say what is trained on what, how, and what ``checkpoint-best.pth`` is chosen on."""
    if not run.runtime.is_main:
        return
    config, runtime, learner = run.config, run.runtime, run.learner
    steps = config.accum_iter
    print(
        f"Training {config.model} on {run.data.train_set} for {config.epochs} epochs on {runtime.device} in {learner.precision}"
        f"{' autocast' if learner.dtype is not None else ''}; {config.batch_size * runtime.world_size * steps} images per optimizer step "
        f"({config.batch_size} x {runtime.world_size} process(es) x {steps} accumulation step(s))"
    )
    selected_on = run.data.selected_on
    print(f"{BEST} is chosen on {selected_on}" if selected_on else f"No {BEST}: nothing to select on")
    if not config.verbose:
        print(f"Benco's per-step log: {run.logs.folder / BENCO_LOG}")


def train_epoch(run: TrainingRun, epoch: int) -> tuple[dict[str, Any], float]:
    """One pass of Benco's ``train_one_epoch`` under the run's autocast, reseeded from the run
    seed and ``epoch`` so that a resumed run replays it: the epoch's record and images/s."""
    from IMDLBenCo.training_scripts.trainer import train_one_epoch

    from imdlbenco_maskclip.host import workarounds

    config, runtime, learner = run.config, run.runtime, run.learner
    seed_everything(epoch_seed(config.seed, epoch, runtime.rank))
    _set_epoch(run.data.loader, epoch)
    learner.guard.start_epoch(epoch)
    progress = EpochProgress(
        run.data.loader,
        f"epoch {epoch + 1}/{config.epochs}",
        learner.optimizer,
        lambda: learner.guard.last_loss,
        world_size=runtime.world_size,
        enabled=None if runtime.is_main and not config.verbose else False,
    )
    autocast = (
        workarounds.trainer_autocast(runtime.device.type, learner.dtype) if learner.dtype is not None else nullcontext()
    )
    with run.logs.quiet(), autocast:
        stats = train_one_epoch(
            learner.model,
            progress,
            learner.optimizer,
            runtime.device,
            epoch,
            learner.loss_scaler,
            log_writer=run.logs.tensorboard,
            log_per_epoch_count=config.log_per_epoch_count,
            args=run.benco,
        )
    record = {"epoch": epoch, "precision": learner.precision, **{f"train_{k}": v for k, v in stats.items()}}
    return record, progress.images_per_second


def validate(run: TrainingRun, epoch: int, record: dict[str, Any]) -> None:
    """Every ``--test_period`` epochs and after the last: the protocol's pixel metrics on the
    validation data (``val_*``) and on the other scored data (``test_*``) into ``record``; on
    held-out validation also the best pixel threshold there (``val_threshold``, from each
    image's F1 at the 19 thresholds: a few more evaluations of the predictions at hand)."""
    if epoch % run.config.test_period and epoch + 1 != run.config.epochs:
        return
    held_out = run.config.select_on == "validation"
    for prefix, datasets in (("val", run.data.val_sets), ("test", run.data.score_sets)):
        if datasets:
            _score(run, datasets, prefix, epoch, record, curves=held_out and prefix == "val")


def save_checkpoints(run: TrainingRun, standing: Standing, epoch: int, is_best: bool) -> None:
    """``checkpoint-best.pth`` when ``epoch`` scored best so far (weights only: for testing and
    predicting, a third of the size), ``checkpoint-last.pth`` after every epoch, and
    ``checkpoint-EPOCH.pth`` every ``--save_period`` epochs."""
    folder = run.logs.folder
    if is_best:
        _write_checkpoint(run, standing, epoch, folder / BEST, best=True)
    _write_checkpoint(run, standing, epoch, folder / LAST)
    run.learner.guard.saved(folder / LAST, epoch)
    if run.config.save_period and (epoch + 1) % run.config.save_period == 0:
        _write_checkpoint(run, standing, epoch, folder / f"checkpoint-{epoch}.pth")


def report_epoch(
    run: TrainingRun, record: dict[str, Any], is_best: bool, images_per_second: float, seconds: float
) -> None:
    """The epoch's record as a line of ``log.txt`` and its one line on the console."""
    if not run.runtime.is_main:
        return
    if run.logs.tensorboard is not None:
        run.logs.tensorboard.flush()
    with open(run.logs.folder / "log.txt", "a", encoding="utf-8") as handle:
        handle.write(json.dumps(_jsonable(record)) + "\n")
    scored = "val_mean_pixel_f1" in record
    selection = (run.config.select_on, record["val_mean_pixel_f1"], is_best) if scored else None
    line = summary_line(
        record["epoch"], run.config.epochs, run.learner.guard.mean_loss, selection, images_per_second, seconds
    )
    print(line, flush=True)


def finish(run: TrainingRun, standing: Standing, seconds: float) -> TrainResult:
    """Close tensorboard, say how long the run took, and what it leaves behind."""
    folder = run.logs.folder
    if run.logs.tensorboard is not None:
        run.logs.tensorboard.close()
    if run.runtime.is_main:
        print(f"Training time {seconds:.0f} s; checkpoints in {folder}")
    best = folder / BEST
    return TrainResult(
        folder,
        folder / LAST,
        best if best.is_file() else None,
        standing.best_metric,
        standing.history,
        run.data.selected_on,
    )


def benco_args(config: TrainConfig, runtime: Runtime, amp: bool) -> argparse.Namespace:
    """The namespace Benco's ``train_one_epoch`` reads: our settings plus Benco's own. The
    checkpoints record it as the run's ``args``."""
    return argparse.Namespace(
        **{**asdict(config), "output_dir": str(_output_dir(config))},
        if_not_amp=not amp,
        distributed=runtime.distributed,
        no_model_eval=False,
        world_size=runtime.world_size,
    )


def _output_dir(config: TrainConfig) -> Path:
    return Path(config.output_dir).expanduser()


def _post_function(model_name: str) -> Any:
    """Benco's per-model post-function (e.g. CAT-Net's), found by name as Benco's train.py does."""
    from IMDLBenCo.registry import POSTFUNCS

    name = f"{model_name.lower()}_post_func"
    for key, func in POSTFUNCS.module_dict.items():
        if key.lower() == name:
            return func
    return None


def _training_loader(dataset: Dataset, config: TrainConfig, runtime: Runtime) -> DataLoader:
    """OpenSDI shards in row-group order (``--shuffle rowgroup``), anything else shuffled by
    the ordinary samplers. Call ``_set_epoch`` before each epoch."""
    if len(dataset) < config.batch_size * runtime.world_size:
        raise UserError(f"--batch_size {config.batch_size}: the training data has only {len(dataset)} images")
    pin_memory = runtime.device.type == "cuda"
    if config.shuffle == "rowgroup" and isinstance(dataset, OpenSDIDataset):
        order = RowGroupShuffleSampler(dataset, config.seed, rank=runtime.rank, world_size=runtime.world_size)
        batches = RowGroupBatchSampler(order, config.batch_size, config.num_workers, drop_last=True)
        return DataLoader(dataset, batch_sampler=batches, num_workers=config.num_workers, pin_memory=pin_memory)
    sampler = (
        DistributedSampler(dataset, runtime.world_size, runtime.rank, shuffle=True, seed=config.seed)
        if runtime.distributed
        else RandomSampler(dataset)
    )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=config.batch_size,
        num_workers=config.num_workers,
        pin_memory=pin_memory,
        drop_last=True,
        persistent_workers=False,
    )


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give the training order of ``epoch`` to the loader's sampler, if its order depends on the epoch."""
    for sampler in (loader.sampler, loader.batch_sampler):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def _score(
    run: TrainingRun, datasets: dict[str, Dataset], prefix: str, epoch: int, record: dict[str, Any], curves: bool
) -> None:
    """The protocol's pixel metrics on each (partial-fake) dataset into ``record``, and their
    mean pixel F1: the same code and figures as ``benco test``'s table; with ``curves``, the
    threshold where mean pixel F1 over all of them is highest (``{prefix}_threshold``)."""
    result = protocol.evaluate(
        run.learner.network,
        datasets,
        run.runtime,
        run.config.test_batch_size,
        run.config.num_workers,
        run.learner.dtype,
        progress=False,
        curves=curves,
    )
    if curves:
        record[f"{prefix}_threshold"] = protocol.best_threshold(result.records)
    for row in result.rows:
        record.update({f"{prefix}_{row.split}_{m.name}": row.scores[m.name] for m in protocol.pixel_metrics()})
    record[f"{prefix}_mean_pixel_f1"] = result.mean.pixel_f1
    if run.logs.tensorboard is not None and result.mean.pixel_f1 is not None:
        run.logs.tensorboard.add_scalar(f"{prefix}/mean_pixel_f1", result.mean.pixel_f1, epoch)


def _write_checkpoint(run: TrainingRun, standing: Standing, epoch: int, path: Path, best: bool = False) -> None:
    """The run after ``epoch`` into ``path`` (by the main process): a best checkpoint records
    what it was chosen on and no optimizer state, the others the optimizer and loss scale."""
    if not run.runtime.is_main:
        return
    learner = run.learner
    state = TrainingState(
        weights=learner.network.state_dict(),
        model_name=run.config.model,
        model_args=run.model_args,
        run_args=vars(run.benco),
        epoch=epoch,
        best_metric=standing.best_metric,
        history=standing.history,
        precision=learner.precision,
        selected_on=run.data.selected_on
        if best
        else f"none: the weights after epoch {epoch + 1} of {run.config.epochs}",
        selection_data=run.data.selection_data if best else None,
        val_threshold=standing.history[-1].get("val_threshold") if best else None,
        optimizer=None if best else learner.optimizer.state_dict(),
        scaler=None if best else learner.loss_scaler.state_dict(),
    )
    layout.write(state, path)


def _load_scaler(loss_scaler: Any, state: dict[str, Any], path: Path, runtime: Runtime) -> None:
    """fp16 resumes its loss scale; a checkpoint of a bf16, fp32 or CPU run has none (torch's
    ``GradScaler`` refuses to load such an empty state), so fp16 then starts scaling afresh."""
    if not loss_scaler._scaler.is_enabled():
        return
    if state:
        loss_scaler.load_state_dict(state)
    elif runtime.is_main:
        print(f"--resume: {path} has no fp16 loss scale (it trained without fp16): loss scaling starts afresh")


def _note_changes(saved: TrainingState, precision: str, config: TrainConfig) -> None:
    """Say when a resumed run differs from its checkpoint in precision or held-out split."""
    if saved.precision not in (None, precision):
        print(f"--resume: the checkpoint trained in {saved.precision}; this run goes on in {precision}")
    before = {k: saved.run_args.get(k) for k in ("select_on", "val_fraction")}
    now = {k: getattr(config, k) for k in before}
    if before != now and all(v is not None for v in before.values()):
        print(f"--resume: the checkpoint held out rows with {before}, this run with {now}: the training rows differ")


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return {k: plain(v) for k, v in record.items()}
