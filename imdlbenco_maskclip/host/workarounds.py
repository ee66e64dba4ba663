"""Workarounds for IMDLBenCo 0.1.45 faults, one function per fault.

Everything this package needs to run Benco's own trainer, tester and evaluators on a CPU,
in one process or under torchrun with gloo, lives here, so that the rest of the code can
call Benco as it is. Each function says which fault it covers; all are idempotent. One fault
is handled elsewhere because it acts before IMDLBenCo is imported, which this module does:
IMDLBenCo's prints and warnings at import (``registration.quiet_benco_import``).
"""

from __future__ import annotations

import argparse
import builtins
import inspect
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from typing import Any

import torch
import torch.distributed as dist
from IMDLBenCo.training_scripts.utils import misc


def cuda_synchronize_without_cuda() -> None:
    """Fault: ``train_one_epoch`` calls ``torch.cuda.synchronize()`` unconditionally,
    which raises on a machine without CUDA. Make it a no-op while CUDA is absent."""
    if torch.cuda.is_available() or getattr(torch.cuda.synchronize, "_benco_noop", False):
        return

    def synchronize(device: Any = None) -> None:
        return None

    synchronize._benco_noop = True  # type: ignore[attr-defined]
    torch.cuda.synchronize = synchronize


@contextmanager
def trainer_autocast(device_type: str, dtype: torch.dtype) -> Iterator[None]:
    """Fault: ``train_one_epoch`` enters ``torch.cuda.amp.autocast()``, which passes
    ``dtype=torch.float16`` explicitly (so ``torch.set_autocast_dtype`` changes nothing) and
    exists for CUDA only. While this block runs, that name opens ``torch.autocast`` on
    ``device_type`` in ``dtype`` instead; outside it, ``torch.cuda.amp.autocast`` is torch's own."""
    import torch.cuda.amp as cuda_amp

    original = cuda_amp.autocast

    def autocast(*args: Any, **kwargs: Any) -> torch.autocast:
        return torch.autocast(device_type, dtype=dtype, enabled=kwargs.get("enabled", True))

    cuda_amp.autocast = autocast  # type: ignore[assignment]
    try:
        yield
    finally:
        cuda_amp.autocast = original  # type: ignore[assignment]


def loss_scaler(device_type: str, enabled: bool) -> misc.NativeScalerWithGradNormCount:
    """Fault: ``NativeScalerWithGradNormCount`` always builds a CUDA ``GradScaler`` (through the
    deprecated ``torch.cuda.amp`` name, which warns twice on a machine without CUDA), enabled
    whenever CUDA is present, so bf16 and fp32 runs scale their loss too. Benco's scaler, built
    quietly, with a scaler for the run's device that is on only when asked (fp16)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scaler = misc.NativeScalerWithGradNormCount()
    scaler._scaler = torch.amp.GradScaler(device_type, enabled=enabled)
    return scaler


@contextmanager
def benco_prints_to(path: str | os.PathLike) -> Iterator[None]:
    """Fault: ``train_one_epoch`` and ``test_one_epoch`` print a line every 20 steps, their
    AMP state and their metric sums, every epoch. Append what they print to the file ``path``
    so that the console keeps one progress bar and one line per epoch."""
    with open(path, "a", encoding="utf-8") as handle, redirect_stdout(handle):
        yield


def _device_of_process_group() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _synchronize_between_processes(self: misc.SmoothedValue) -> None:
    if not misc.is_dist_avail_and_initialized():
        return
    t = torch.tensor([self.count, self.total], dtype=torch.float64, device=_device_of_process_group())
    dist.barrier()
    dist.all_reduce(t)
    self.count = int(t[0].item() + 0.5)
    self.total = t[1].item()


def _all_reduce_mean(x: float) -> float:
    world_size = misc.get_world_size()
    if world_size == 1:
        return x
    t = torch.tensor(x, device=_device_of_process_group())
    dist.all_reduce(t)
    return (t / world_size).item()


def gloo_reductions() -> None:
    """Fault: ``SmoothedValue.synchronize_between_processes`` and ``all_reduce_mean``
    put their tensors on ``'cuda'`` whatever the backend, so a gloo (CPU) process group
    fails. Use the process group's own device."""
    misc.SmoothedValue.synchronize_between_processes = _synchronize_between_processes
    misc.all_reduce_mean = _all_reduce_mean


def allow_namespace_checkpoints() -> None:
    """Fault: Benco checkpoints pickle an ``argparse.Namespace`` and ``misc.load_model``
    calls ``torch.load`` without ``weights_only``; torch >= 2.6 refuses such files by
    default. Allow the Namespace (and nothing else) for weights-only loading."""
    torch.serialization.add_safe_globals([argparse.Namespace])


def no_pretrained_file(model_name: str, option: str) -> str | None:
    """Fault: ``PSCC_Net``'s ``pretrain_path`` defaults to None, which its HRNet passes to
    ``os.path.isfile`` (a TypeError); only an empty string means "no file". Every other
    model's pretrained-file option takes None for that."""
    return "" if (model_name, option) == ("PSCC_Net", "pretrain_path") else None


def _parse_bool(text: str) -> bool:
    lowered = str(text).strip().lower()
    if lowered in {"1", "true", "yes", "y", "on"}:
        return True
    if lowered in {"0", "false", "no", "n", "off"}:
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def _parse_optional_str(text: str) -> str | None:
    return None if text.strip().lower() in {"none", "null"} else text


def model_argparser(model_class: Callable, with_defaults: bool = True) -> argparse.ArgumentParser:
    """Fault: ``misc.create_argparser`` parses unannotated parameters as ``str`` and a
    ``bool`` annotation reads any non-empty string (``"False"`` too) as True. Build the
    same flags, typed from the annotation or else the default, with real booleans.
    Without defaults, the parsed namespace holds only the flags actually given."""
    target = model_class if isinstance(model_class, (types.FunctionType, types.MethodType)) else model_class.__init__
    parser = argparse.ArgumentParser(prog=f"{getattr(model_class, '__name__', 'model')} options", add_help=False)
    for name, param in inspect.signature(target).parameters.items():
        if name == "self" or param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = None if param.default is inspect.Parameter.empty else param.default
        annotation = param.annotation
        if isinstance(annotation, str):
            annotation = {"int": int, "float": float, "bool": bool, "str": str}.get(annotation, inspect.Parameter.empty)
        if annotation is inspect.Parameter.empty:
            annotation = type(default) if isinstance(default, (bool, int, float, str)) else str
        if annotation is bool:
            parse: Callable[[str], Any] = _parse_bool
        elif annotation in (int, float):
            parse = annotation
        else:
            parse = _parse_optional_str
        parser.add_argument(
            f"--{name}",
            type=parse,
            default=default if with_defaults else argparse.SUPPRESS,
            help=f"{name} (default: {default})",
        )
    return parser


def silence_other_processes(is_main: bool) -> None:
    """Fault: ``misc.setup_for_distributed`` silences every ``print`` of the processes other
    than rank 0, error messages to ``sys.stderr`` included, so a process that stops says
    nothing about why. Keep Benco's silence for what goes to stdout; let stderr through."""
    if getattr(builtins.print, "_benco_stderr_passes", False):
        return
    plain = builtins.print
    misc.setup_for_distributed(is_main)
    benco_print = builtins.print

    def print_(*args: Any, **kwargs: Any) -> None:
        if kwargs.get("file") is sys.stderr:
            plain(*args, **kwargs)
        else:
            benco_print(*args, **kwargs)

    print_._benco_stderr_passes = True  # type: ignore[attr-defined]
    builtins.print = print_


def label_from_mask(transforms: Any) -> Any:
    """Fault: ``AbstractDataset`` recomputes ``label`` from the mask only when
    ``common_transforms`` is set, and ``ManiDataset`` otherwise labels every image fake (its Gt
    path is never "Negative"). An empty albumentations pipeline, as Benco's own ``train.py``
    passes for testing, makes every Benco dataset derive the label from the mask."""
    if transforms is not None:
        return transforms
    import albumentations as albu

    return albu.Compose([])


def install(distributed_backend: str | None = None) -> None:
    """Apply the shims a process needs before calling Benco's training scripts."""
    cuda_synchronize_without_cuda()
    allow_namespace_checkpoints()
    if distributed_backend == "gloo":
        gloo_reductions()
