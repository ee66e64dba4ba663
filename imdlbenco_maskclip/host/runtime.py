"""One process, one GPU, or torchrun: pick the device and start the process group.

Benco's ``init_distributed_mode`` hard-codes NCCL; here NCCL serves GPUs and gloo serves CPUs,
so ``torchrun --nproc_per_node=N -m imdlbenco_maskclip train ...`` works on either.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.host import workarounds


@dataclass(frozen=True)
class Runtime:
    """Where this process runs and its place among the others."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` is CUDA when present, else CPU; ``cuda`` without a GPU is an error naming the flag."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device: '{name}' is not a device (use auto, cpu, cuda or cuda:N)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError("--device cuda: no CUDA GPU is visible to this process (use --device cpu)")
        if device.index is None:
            device = torch.device("cuda", local_rank)
    return device


def start_runtime(device_name: str, timeout: timedelta | None = None) -> Runtime:
    """Start the process group when torchrun's variables are set; apply Benco's shims.
    ``timeout``: how long a collective call waits for the other processes (torch's default if None)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_name, local_rank)
    backend = None
    if world_size > 1 and not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend=backend, rank=rank, world_size=world_size, timeout=timeout)
        workarounds.silence_other_processes(rank == 0)
    elif dist.is_initialized():
        backend = dist.get_backend()
    workarounds.install(distributed_backend=backend)
    return Runtime(device=device, rank=rank, world_size=world_size, local_rank=local_rank)


def stop_runtime(runtime: Runtime) -> None:
    if runtime.distributed and dist.is_initialized():
        dist.destroy_process_group()
