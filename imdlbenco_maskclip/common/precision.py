"""The one rule that turns ``--amp`` into an autocast dtype, for every command.

``off``, ``bf16`` and ``fp16`` are used as given, on a GPU or (through CPU autocast) on the
CPU. ``auto`` depends on what the precision is for. On CUDA it is bf16 on cards that support
it, fp16 on older cards. On the CPU, for inference (``benco predict``, ``serve``,
``Predictor``) it is bf16 where the CPU computes bf16 natively (``cpu_computes_bf16``), else
off; for training it is off. ``benco train``, ``predict`` and ``serve`` default to ``auto``;
``benco test`` defaults to ``off`` so that protocol figures do not depend on the machine
(``--amp auto`` opts in, with the inference rule).
"""

from __future__ import annotations

import torch

from imdlbenco_maskclip.common.errors import UserError

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
TRAINING = "training"
INFERENCE = "inference"
PURPOSES = (TRAINING, INFERENCE)
PRECISIONS = {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
"""Autocast dtype -> the name results, logs and checkpoints record."""


def cpu_computes_bf16() -> bool:
    """Whether this CPU has bf16 arithmetic of its own (x86 AVX512-BF16 or AMX), so that bf16
    matrix products run at about twice the fp32 rate. torch says so only through private
    functions; without them (another torch, another architecture) the answer is no."""
    checks = (getattr(torch.cpu, "_is_avx512_bf16_supported", None), getattr(torch.cpu, "_is_amx_tile_supported", None))
    return any(check is not None and check() for check in checks)


def autocast_dtype(amp: str | None, device: torch.device, purpose: str = TRAINING) -> torch.dtype | None:
    """The autocast dtype ``amp`` asks for on ``device``, for ``purpose`` (``training`` or
    ``inference``); None runs in float32. None for ``amp`` reads as ``auto``."""
    amp = amp or "auto"
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp: '{amp}' is not one of {', '.join(AMP_CHOICES)}")
    if amp == "auto" and device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if amp == "auto":
        native = device.type == "cpu" and purpose == INFERENCE and cpu_computes_bf16()
        return torch.bfloat16 if native else None
    return {"off": None, "bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def precision_name(dtype: torch.dtype | None) -> str:
    """``float32``, ``bfloat16`` or ``float16``: how a run records its precision."""
    return PRECISIONS[dtype]
