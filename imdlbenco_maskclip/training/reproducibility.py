"""Seeds, and ``--deterministic``: runs whose weights do not depend on the process or machine load.

Every epoch reseeds Python, NumPy and torch from (run seed, epoch, rank), so a resumed run
draws the same batches, augmentations and dropout as an uninterrupted one. What still differs
between processes is the arithmetic: on the CPU, a matrix product or a reduction split over
N threads adds its partial sums in an order that depends on N, and N is the machine's core
count, the ``OMP_NUM_THREADS`` of the launcher (torchrun sets 1) or what the BLAS chooses
under load; measured here, a tiny run with 1 thread ends 5e-5 away from the same run with 2.
On the GPU, cuDNN's autotuner and atomics-based kernels vary from run to run.
``--deterministic`` pins all of these.
"""

from __future__ import annotations

import os
import random

import numpy as np
import torch

DETERMINISTIC_THREADS = 1
"""Intra-op CPU threads under ``--deterministic``: the same on every machine."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """A seed that depends only on the run seed, the epoch and the rank (so resumes replay)."""
    return int(np.random.SeedSequence([seed, epoch, rank]).generate_state(1)[0])


def make_deterministic() -> None:
    """Deterministic kernels, one intra-op CPU thread, no cuDNN autotuning.

    Call before CUDA starts (cuBLAS reads ``CUBLAS_WORKSPACE_CONFIG`` once). Kernels that have
    no deterministic version (on CUDA, e.g. the backward of bilinear upsampling) warn instead
    of failing, so such a run can still go on; those kernels alone may vary.
    """
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False
    torch.set_num_threads(DETERMINISTIC_THREADS)
