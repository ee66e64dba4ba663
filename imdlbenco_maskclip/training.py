"""Training on top of Benco's ``train_one_epoch`` and ``test_one_epoch``.

What Benco's ``train.py`` lacks and this adds: one CPU process, one GPU or torchrun with NCCL
or gloo; atomic checkpoints every epoch (``checkpoint-last.pth``), the best by validation
pixel F1 (``checkpoint-best.pth``, weights only); exact ``--resume`` (each epoch reseeds from the run seed
and the epoch number, so a resumed run draws the same batches and augmentations as an
uninterrupted one); bf16 autocast where the card supports it; a stop with a clear message
when the loss stops being finite.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, SequentialSampler

from dataset_adapters import OpenSDIDataset, RowGroupBatchSampler, RowGroupShuffleSampler
from imdlbenco_maskclip import checkpoints
from imdlbenco_maskclip.augmentations import train_transforms
from imdlbenco_maskclip.data_sources import DatasetOptions, open_dataset, protocol_datasets
from imdlbenco_maskclip.distributed import Runtime
from imdlbenco_maskclip.errors import UserError
from imdlbenco_maskclip.model_builder import build_model

LAST = "checkpoint-last.pth"
BEST = "checkpoint-best.pth"


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the epoch and step."""


class FiniteLossGuard:
    """A forward hook that stops training at the first non-finite ``backward_loss``."""

    def __init__(self) -> None:
        self.epoch = 0
        self.step = 0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not module.training or not isinstance(output, dict) or output.get("backward_loss") is None:
            return
        loss = output["backward_loss"].detach()
        if not torch.isfinite(loss).all():
            parts = {k: float(v) for k, v in (output.get("visual_loss") or {}).items()}
            raise TrainingDiverged(
                f"the loss became {loss.float().item()} at epoch {self.epoch}, step {self.step} "
                f"(loss terms: {parts}). The last good weights are in {LAST}; try a lower --lr or --amp off."
            )
        self.step += 1


@dataclass
class TrainResult:
    """What a finished run leaves behind."""

    output_dir: Path
    last_checkpoint: Path
    best_checkpoint: Path | None
    best_metric: float | None
    history: list[dict[str, Any]]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed that depends only on the run seed, the epoch and the rank (so resumes replay)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def _amp_setting(amp: str, device: torch.device) -> tuple[bool, torch.dtype | None]:
    """(use autocast, its dtype). ``auto`` is bf16 on cards that have it, fp16 on others, off on CPU."""
    if device.type != "cuda" or amp == "off":
        return False, None
    if amp == "auto":
        return True, torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return True, {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


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


def _pixel_evaluators() -> list:
    """Validation runs on partial fakes, so only pixel metrics mean something there."""
    from IMDLBenCo.evaluation import PixelF1, PixelIOU

    return [PixelF1(threshold=0.5, mode="origin"), PixelIOU(threshold=0.5, mode="origin")]


def benco_args(values: dict[str, Any], runtime: Runtime, amp: bool) -> argparse.Namespace:
    """The namespace Benco's ``train_one_epoch``/``test_one_epoch`` read, plus our settings."""
    return argparse.Namespace(
        **values,
        if_not_amp=not amp,
        distributed=runtime.distributed,
        no_model_eval=False,
        world_size=runtime.world_size,
    )


def train(values: dict[str, Any], model_name: str, model_args: dict[str, Any], runtime: Runtime) -> TrainResult:
    """Run a whole training; ``values`` are the resolved train options of ``benco train``."""
    from IMDLBenCo.training_scripts.tester import test_one_epoch
    from IMDLBenCo.training_scripts.trainer import train_one_epoch
    from IMDLBenCo.training_scripts.utils import misc
    from timm.optim import create_optimizer_v2
    from torch.utils.tensorboard import SummaryWriter

    from imdlbenco_maskclip.compat import autocast_dtype

    output_dir = Path(values["output_dir"]).expanduser()
    use_amp, amp_dtype = _amp_setting(values["amp"], runtime.device)
    if amp_dtype is not None:
        autocast_dtype(amp_dtype)
    args = benco_args({**values, "model": model_name, "output_dir": str(output_dir)}, runtime, use_amp)

    post = _post_function(model_name)
    data_options = DatasetOptions(values["image_size"], values["if_padding"] or False, values["edge_mask_width"], None, post)
    train_options = DatasetOptions(
        data_options.image_size, data_options.padding, data_options.edge_width, train_transforms(values["augment"]), post
    )
    train_set = open_dataset(values["data_path"], train_options, values["generators"])
    val_sets = (
        protocol_datasets([values["test_data_path"]], data_options, values["test_generators"], subset="localization")
        if values["test_data_path"]
        else {}
    )

    seed_everything(values["seed"] + runtime.rank)
    model = build_model(model_name, model_args).to(runtime.device)
    model_without_ddp = model
    guard = FiniteLossGuard()
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

    start_epoch, best_metric, history = 0, None, []
    if values["resume"]:
        resume_path = output_dir / LAST if values["resume"] == "auto" else Path(values["resume"]).expanduser()
        if values["resume"] == "auto" and not resume_path.is_file():
            print(f"--resume auto: no {resume_path} yet, starting from scratch")
        else:
            state = checkpoints.load(resume_path)
            checkpoints.load_weights(model_without_ddp, state["model"], str(resume_path))
            if "optimizer" in state:
                optimizer.load_state_dict(state["optimizer"])
                loss_scaler.load_state_dict(state["scaler"])
            else:
                print(f"--resume: {resume_path} holds weights only (a best checkpoint?): the optimizer starts afresh")
            start_epoch = int(state.get("epoch", -1)) + 1
            best_metric = state.get("best_metric")
            history = list(state.get("history", []))
            print(f"Resumed {resume_path} at epoch {start_epoch}")

    train_loader = _loader(train_set, values["batch_size"], runtime, args, train=True)
    val_loaders = {name: _loader(ds, values["test_batch_size"], runtime, args, train=False) for name, ds in val_sets.items()}
    log_writer = None
    if runtime.is_main:
        output_dir.mkdir(parents=True, exist_ok=True)
        log_writer = SummaryWriter(log_dir=str(Path(values["log_dir"]).expanduser() if values["log_dir"] else output_dir / "tensorboard"))
        print(f"Training {model_name} on {train_set} for {values['epochs']} epochs on {runtime.device}")

    def save(path: Path, epoch: int, resumable: bool = True) -> None:
        """Benco's checkpoint layout; without optimizer and scaler state when not ``resumable``
        (the best checkpoint is for testing and predicting, and is a third of the size)."""
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
        }
        if resumable:
            payload.update(optimizer=optimizer.state_dict(), scaler=loss_scaler.state_dict())
        checkpoints.save_atomic(payload, path)

    started = time.time()
    for epoch in range(start_epoch, values["epochs"]):
        seed_everything(epoch_seed(values["seed"], epoch, runtime.rank))
        _set_epoch(train_loader, epoch)
        guard.start_epoch(epoch)
        train_stats = train_one_epoch(
            model, train_loader, optimizer, runtime.device, epoch, loss_scaler,
            log_writer=log_writer, log_per_epoch_count=values["log_per_epoch_count"], args=args,
        )
        record: dict[str, Any] = {"epoch": epoch, **{f"train_{k}": v for k, v in train_stats.items()}}
        last_epoch = epoch + 1 == values["epochs"]
        if val_loaders and (epoch % values["test_period"] == 0 or last_epoch):
            scores = []
            for name, loader in val_loaders.items():
                stats = test_one_epoch(
                    model, loader, _pixel_evaluators(), runtime.device, epoch,
                    name=name, log_writer=log_writer, args=args,
                )
                record.update({f"val_{name}_{k}": v for k, v in stats.items()})
                scores.append(float(stats["pixel-level F1"]))
            score = float(np.mean(scores))
            record["val_mean_pixel_f1"] = score
            if log_writer is not None:
                log_writer.add_scalar("val/mean_pixel_f1", score, epoch)
        history.append(record)
        if "val_mean_pixel_f1" in record and (best_metric is None or record["val_mean_pixel_f1"] > best_metric):
            best_metric = record["val_mean_pixel_f1"]
            save(output_dir / BEST, epoch, resumable=False)
            if runtime.is_main:
                print(f"New best mean pixel F1 {best_metric:.4f} at epoch {epoch}: {output_dir / BEST}")
        save(output_dir / LAST, epoch)
        if values["save_period"] and (epoch + 1) % values["save_period"] == 0:
            save(output_dir / f"checkpoint-{epoch}.pth", epoch)
        if runtime.is_main:
            if log_writer is not None:
                log_writer.flush()
            with open(output_dir / "log.txt", "a", encoding="utf-8") as handle:
                handle.write(json.dumps(_jsonable(record)) + "\n")
    if log_writer is not None:
        log_writer.close()
    if runtime.is_main:
        print(f"Training time {time.time() - started:.0f} s; checkpoints in {output_dir}")
    best_path = output_dir / BEST
    return TrainResult(output_dir, output_dir / LAST, best_path if best_path.is_file() else None, best_metric, history)


def _jsonable(record: dict[str, Any]) -> dict[str, Any]:
    def plain(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            value = value.item()
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)
        return value

    return {k: plain(v) for k, v in record.items()}
