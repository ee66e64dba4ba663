"""Training on top of Benco's ``train_one_epoch``, validated by the protocol's own code.

What Benco's ``train.py`` lacks and this adds: one CPU process, one GPU or torchrun with NCCL
or gloo; atomic checkpoints every epoch (``checkpoint-last.pth``); ``checkpoint-best.pth``
(weights only) chosen by pixel F1 (computed by ``protocol``, as ``benco test`` computes it) on
a validation set held out from the training data, or on the test data as the paper did
(``--select_on test``), recorded in the checkpoint as ``selected_on``; ``--resume`` that replays the same batches and augmentations (each epoch
reseeds from the run seed and the epoch number; see ``reproducibility``); ``--amp`` in the
dtype asked for, with loss scaling for fp16 only; a global batch set by gradient accumulation;
a stop with one message in every process when the loss stops being finite; and a quiet
console (one bar and one line per epoch; Benco's per-step log goes to ``train_log.txt``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from dataset_adapters import OpenSDIDataset, RowGroupBatchSampler, RowGroupShuffleSampler
from imdlbenco_maskclip import checkpoints, protocol
from imdlbenco_maskclip.augmentations import train_transforms
from imdlbenco_maskclip.data_sources import DatasetOptions, hold_out, open_dataset, protocol_datasets, resolved, split_named
from imdlbenco_maskclip.distributed import Runtime
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.model_builder import build_model
from imdlbenco_maskclip.progress import EpochProgress, summary_line
from imdlbenco_maskclip.reproducibility import epoch_seed, seed_everything

LAST = "checkpoint-last.pth"
BEST = "checkpoint-best.pth"
BENCO_LOG = "train_log.txt"
PRECISIONS = {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the epoch, step and process."""


class FiniteLossGuard:
    """A forward hook that stops training at the first non-finite ``backward_loss``.

    Under torchrun the processes share their losses at every step, so all of them stop at the
    same step with the same message instead of one raising while the others wait in the next
    collective. It also keeps the loss of the last step and the epoch's sum for the console.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.checkpoint: Path | None = None
        self.saved_epoch: int | None = None
        self.epoch = 0
        self.step = 0
        self.last_loss: float | None = None
        self.loss_sum = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step, self.last_loss, self.loss_sum = epoch, 0, None, 0.0

    def saved(self, checkpoint: Path, epoch: int) -> None:
        """Good weights of ``epoch`` are now in ``checkpoint``."""
        self.checkpoint, self.saved_epoch = checkpoint, epoch

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.step if self.step else None

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not module.training or not isinstance(output, dict) or output.get("backward_loss") is None:
            return
        loss = output["backward_loss"].detach().float().mean().reshape(1)
        if self.runtime.distributed:
            import torch.distributed as dist

            gathered = [torch.empty_like(loss) for _ in range(self.runtime.world_size)]
            dist.all_gather(gathered, loss)
            losses = torch.cat(gathered).tolist()
        else:
            losses = loss.tolist()
        bad = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(self._message(losses, bad, output))
        self.last_loss = losses[self.runtime.rank]
        self.loss_sum += self.last_loss
        self.step += 1

    def _message(self, losses: list[float], bad: list[int], output: dict) -> str:
        where = f"at epoch {self.epoch}, step {self.step}"
        if self.runtime.distributed:
            processes = ", ".join(f"{rank} ({losses[rank]})" for rank in bad)
            what = f"the loss stopped being finite in process(es) {processes} of {self.runtime.world_size} {where}; every process stops here"
        else:
            parts = {k: float(v) for k, v in (output.get("visual_loss") or {}).items()}
            what = f"the loss became {losses[0]} {where} (loss terms: {parts})"
        if self.checkpoint is None:
            kept = "No checkpoint was written before this (the first is written at the end of an epoch), so a new run starts from scratch"
        else:
            kept = f"The last good weights are in {self.checkpoint} (after epoch {self.saved_epoch}); --resume auto continues from there"
        return f"{what}. {kept}. Try a lower --lr, or --amp off."


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    history: list[dict[str, Any]]
    selected_on: str | None = None


def amp_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``--amp``, None for none. ``auto`` is bf16 on CUDA cards that
    support it, fp16 on other cards and off on the CPU; ``bf16`` and ``fp16`` also run on the
    CPU (CPU autocast), where they are seldom faster."""
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


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


def _post_function(model_name: str) -> Any:
    """Benco's per-model post-function (e.g. CAT-Net's), found by name as Benco's train.py does."""
    from IMDLBenCo.registry import POSTFUNCS

    name = f"{model_name.lower()}_post_func"
    for key, func in POSTFUNCS.module_dict.items():
        if key.lower() == name:
            return func
    return None


def _loader(dataset: Dataset, batch_size: int, runtime: Runtime, args: argparse.Namespace, train: bool) -> DataLoader:
    """Training: OpenSDI shards in row-group order (``--shuffle rowgroup``), else shuffled by the
    ordinary samplers; validation in order. Call ``_set_epoch`` before each training epoch."""
    if train:
        if len(dataset) < batch_size * runtime.world_size:
            raise UserError(f"--batch_size {batch_size}: the training data has only {len(dataset)} images")
        if args.shuffle == "rowgroup" and isinstance(dataset, OpenSDIDataset):
            order = RowGroupShuffleSampler(dataset, args.seed, rank=runtime.rank, world_size=runtime.world_size)
            return DataLoader(
                dataset,
                batch_sampler=RowGroupBatchSampler(order, batch_size, args.num_workers, drop_last=True),
                num_workers=args.num_workers,
                pin_memory=runtime.device.type == "cuda",
            )
        sampler = (
            DistributedSampler(dataset, runtime.world_size, runtime.rank, shuffle=True, seed=args.seed)
            if runtime.distributed
            else RandomSampler(dataset)
        )
    else:
        sampler = (
            DistributedSampler(dataset, runtime.world_size, runtime.rank, shuffle=False, drop_last=True)
            if runtime.distributed
            else SequentialSampler(dataset)
        )
    return DataLoader(
        dataset,
        sampler=sampler,
        batch_size=batch_size,
        num_workers=args.num_workers,
        pin_memory=runtime.device.type == "cuda",
        drop_last=train or runtime.distributed,
        persistent_workers=False,
    )


def _set_epoch(loader: DataLoader, epoch: int) -> None:
    """Give the training order of ``epoch`` to the loader's sampler, if its order depends on the epoch."""
    for sampler in (loader.sampler, loader.batch_sampler):
        if hasattr(sampler, "set_epoch"):
            sampler.set_epoch(epoch)


def benco_args(values: dict[str, Any], runtime: Runtime, amp: bool) -> argparse.Namespace:
    """The namespace Benco's ``train_one_epoch`` reads, plus our settings."""
    return argparse.Namespace(
        **values,
        if_not_amp=not amp,
        distributed=runtime.distributed,
        no_model_eval=False,
        world_size=runtime.world_size,
    )


def train(values: dict[str, Any], model_name: str, model_args: dict[str, Any], runtime: Runtime) -> TrainResult:
    """Run a whole training; ``values`` are the resolved train options of ``benco train``."""
    from IMDLBenCo.training_scripts.trainer import train_one_epoch
    from IMDLBenCo.training_scripts.utils import misc
    from timm.optim import create_optimizer_v2
    from torch.utils.tensorboard import SummaryWriter

    from imdlbenco_maskclip import compat

    output_dir = Path(values["output_dir"]).expanduser()
    dtype = amp_dtype(values["amp"], runtime.device)
    precision = PRECISIONS[dtype]
    args = benco_args({**values, "model": model_name, "output_dir": str(output_dir)}, runtime, dtype is not None)

    post = _post_function(model_name)
    data_options = DatasetOptions(values["image_size"], values["if_padding"] or False, values["edge_mask_width"], None, post)
    train_options = DatasetOptions(
        data_options.image_size, data_options.padding, data_options.edge_width, train_transforms(values["augment"]), post
    )
    train_set = open_dataset(values["data_path"], train_options, values["generators"])
    test_sets = (
        protocol_datasets([values["test_data_path"]], data_options, values["test_generators"], subset="localization")
        if values["test_data_path"]
        else {}
    )
    selection_data = None
    if values["select_on"] == "test":
        if not test_sets:
            raise UserError("--select_on test needs --test_data_path (the paper chose on OpenSDI_test sd15)")
        val_sets, score_sets = test_sets, {}
        test_path = split_named(values["test_data_path"])[1]
        selected_on = f"test: {Path(test_path.rstrip('/')).name} {' '.join(test_sets)}"
        selection_data = {"data_path": resolved(test_path), "rows": list(test_sets)}
    else:
        held = hold_out(train_set, values["val_fraction"], data_options.transforms)
        train_set = held.train
        val_sets = {"validation": held.validation} if held.validation is not None else {}
        score_sets = test_sets
        selected_on = f"validation: {held.description}" if val_sets else None
        if not val_sets and runtime.is_main:
            print(
                f"--val_fraction {values['val_fraction']}: the {held.description} include no partial fakes to score, "
                "so no checkpoint-best.pth is chosen; raise --val_fraction, or --select_on test"
            )

    seed_everything(values["seed"] + runtime.rank)
    model = build_model(model_name, model_args).to(runtime.device)
    model_without_ddp = model
    guard = FiniteLossGuard(runtime)
    model_without_ddp.register_forward_hook(guard)
    if runtime.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model,
            device_ids=[runtime.device.index] if runtime.device.type == "cuda" else None,
            find_unused_parameters=bool(values["find_unused_parameters"]),
        )
    optimizer = create_optimizer_v2(
        model_without_ddp, opt="adamw", lr=values["lr"], weight_decay=values["weight_decay"], betas=(0.9, 0.999)
    )
    loss_scaler = misc.NativeScalerWithGradNormCount()
    compat.grad_scaler(loss_scaler, runtime.device.type, enabled=dtype == torch.float16)

    start_epoch, best_metric, history = 0, None, []
    if values["resume"]:
        resume_path = output_dir / LAST if values["resume"] == "auto" else Path(values["resume"]).expanduser()
        if values["resume"] == "auto" and not resume_path.is_file():
            print(f"--resume auto: no {resume_path} yet, starting from scratch")
        else:
            state = checkpoints.load(resume_path)
            checkpoints.load_weights(model_without_ddp, state["model"], str(resume_path))
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])  # moves the state to the parameters' device
                _load_scaler(loss_scaler, state.get("scaler") or {}, resume_path, runtime)
            else:
                print(f"--resume: {resume_path} holds weights only (a best checkpoint?): the optimizer starts afresh")
            start_epoch = int(state.get("epoch", -1)) + 1
            best_metric = state.get("best_metric")
            history = list(state.get("history", []))
            guard.saved(resume_path, start_epoch - 1)
            if runtime.is_main:
                _note_changes(state, precision, values)
                print(f"Resumed {resume_path} at epoch {start_epoch}")

    train_loader = _loader(train_set, values["batch_size"], runtime, args, train=True)
    log_writer = None
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_writer = SummaryWriter(log_dir=str(Path(values["log_dir"]).expanduser() if values["log_dir"] else output_dir / "tensorboard"))
        steps = values["accum_iter"]
        print(
            f"Training {model_name} on {train_set} for {values['epochs']} epochs on {runtime.device} in {precision}"
            f"{' autocast' if dtype is not None else ''}; {values['batch_size'] * runtime.world_size * steps} images per optimizer step "
            f"({values['batch_size']} x {runtime.world_size} process(es) x {steps} accumulation step(s))"
        )
        print(f"{BEST} is chosen on {selected_on}" if selected_on else f"No {BEST}: nothing to select on")
        if not values["verbose"]:
            print(f"Benco's per-step log: {output_dir / BENCO_LOG}")
    benco_prints = None if values["verbose"] else output_dir / BENCO_LOG if runtime.is_main else Path(os.devnull)

    def quiet() -> Any:
        return compat.benco_prints_to(benco_prints) if benco_prints is not None else nullcontext()

    def score(datasets: dict[str, Dataset], prefix: str, epoch: int, record: dict[str, Any]) -> None:
        """The protocol's pixel metrics on each (partial-fake) dataset into ``record``, and their
        mean pixel F1: the same code and figures as ``benco test``'s table."""
        result = protocol.evaluate(
            model_without_ddp, datasets, runtime, values["test_batch_size"], values["num_workers"], dtype, progress=False
        )
        for row in result.rows:
            record.update({f"{prefix}_{row.split}_{m.name}": row.scores[m.name] for m in protocol.pixel_metrics()})
        record[f"{prefix}_mean_pixel_f1"] = result.mean.pixel_f1
        if log_writer is not None and result.mean.pixel_f1 is not None:
            log_writer.add_scalar(f"{prefix}/mean_pixel_f1", result.mean.pixel_f1, epoch)

    def save(path: Path, epoch: int, best: bool = False) -> None:
        """Benco's checkpoint layout; the best checkpoint (for testing and predicting, a third of
        the size) holds no optimizer and scaler state."""
        if not runtime.is_main:
            return
        payload = {
            "model": model_without_ddp.state_dict(),
            "epoch": epoch,
            "args": checkpoints.plain_namespace(args),
            "model_name": model_name,
            "model_args": model_args,
            "best_metric": best_metric,
            "history": history,
            "precision": precision,
            "selected_on": selected_on if best else f"none: the weights after epoch {epoch + 1} of {values['epochs']}",
            "selection_data": selection_data if best else None,
        }
        if not best:
            payload.update(optimizer=optimizer.state_dict(), scaler=loss_scaler.state_dict())
        checkpoints.save_atomic(payload, path)

    started = time.time()
    for epoch in range(start_epoch, values["epochs"]):
        seed_everything(epoch_seed(values["seed"], epoch, runtime.rank))
        _set_epoch(train_loader, epoch)
        guard.start_epoch(epoch)
        epoch_started = time.time()
        progress = EpochProgress(
            train_loader, f"epoch {epoch + 1}/{values['epochs']}", optimizer, lambda: guard.last_loss,
            world_size=runtime.world_size, enabled=None if runtime.is_main and not values["verbose"] else False,
        )
        autocast = compat.trainer_autocast(runtime.device.type, dtype) if dtype is not None else nullcontext()
        with quiet(), autocast:
            train_stats = train_one_epoch(
                model, progress, optimizer, runtime.device, epoch, loss_scaler,
                log_writer=log_writer, log_per_epoch_count=values["log_per_epoch_count"], args=args,
            )
        record: dict[str, Any] = {"epoch": epoch, "precision": precision, **{f"train_{k}": v for k, v in train_stats.items()}}
        last_epoch = epoch + 1 == values["epochs"]
        if epoch % values["test_period"] == 0 or last_epoch:
            if val_sets:
                score(val_sets, "val", epoch, record)
            if score_sets:
                score(score_sets, "test", epoch, record)
        history.append(record)
        is_best = "val_mean_pixel_f1" in record and (best_metric is None or record["val_mean_pixel_f1"] > best_metric)
        if is_best:
            best_metric = record["val_mean_pixel_f1"]
            save(output_dir / BEST, epoch, best=True)
        save(output_dir / LAST, epoch)
        guard.saved(output_dir / LAST, epoch)
        if values["save_period"] and (epoch + 1) % values["save_period"] == 0:
            save(output_dir / f"checkpoint-{epoch}.pth", epoch)
        if runtime.is_main:
            if log_writer is not None:
                log_writer.flush()
            with open(output_dir / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(_jsonable(record)) + "\n")
            scored = "val_mean_pixel_f1" in record
            selection = (values["select_on"], record["val_mean_pixel_f1"], is_best) if scored else None
            print(summary_line(
                epoch, values["epochs"], guard.mean_loss, selection, progress.images_per_second, time.time() - epoch_started
            ), flush=True)
    if log_writer is not None:
        log_writer.close()
    if runtime.is_main:
        print(f"Training time {time.time() - started:.0f} s; checkpoints in {output_dir}")
    best_path = output_dir / BEST
    return TrainResult(
        output_dir, output_dir / LAST, best_path if best_path.is_file() else None, best_metric, history, selected_on
    )


def _load_scaler(loss_scaler: Any, state: dict[str, Any], path: Path, runtime: Runtime) -> None:
    """fp16 resumes its loss scale; a checkpoint of a bf16, fp32 or CPU run has none (torch's
    ``GradScaler`` refuses to load such an empty state), so fp16 then starts scaling afresh."""
    if not loss_scaler._scaler.is_enabled():
        return
    if state:
        loss_scaler.load_state_dict(state)
    elif runtime.is_main:
        print(f"--resume: {path} has no fp16 loss scale (it trained without fp16): loss scaling starts afresh")


def _note_changes(state: dict[str, Any], precision: str, values: dict[str, Any]) -> None:
    """Say when a resumed run differs from its checkpoint in precision or held-out split."""
    if state.get("precision") not in (None, precision):
        print(f"--resume: the checkpoint trained in {state['precision']}; this run goes on in {precision}")
    saved = state.get("args")
    before = {k: getattr(saved, k, None) for k in ("select_on", "val_fraction")} if saved is not None else {}
    now = {k: values[k] for k in before}
    if before and before != now and all(v is not None for v in before.values()):
        print(f"--resume: the checkpoint held out rows with {before}, this run with {now}: the training rows differ")


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return {k: plain(v) for k, v in record.items()}
