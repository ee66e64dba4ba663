"""The one rule that turns ``--amp`` into an autocast dtype, for every command.

``off``, ``bf16`` and ``fp16`` are used as given, on a GPU or (through CPU autocast) on the
CPU. ``auto`` is bf16 on CUDA cards that support it, fp16 on older cards, and off on the CPU.
``benco train``, ``predict`` and ``serve`` default to ``auto``; ``benco test`` defaults to
``off`` so that protocol figures do not depend on the machine.
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


def autocast_dtype(amp: str | None, device: torch.device, purpose: str = TRAINING) -> torch.dtype | None:
    """The autocast dtype ``amp`` asks for on ``device``, for ``purpose`` (``training``, which
    ``benco test`` shares, or ``inference``: ``benco predict``, ``serve``, ``Predictor``); None
    runs in float32. None for ``amp`` reads as ``auto``."""
    amp = amp or "auto"
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {', '.join(PURPOSES)}, got {purpose!r}")
    if amp not in AMP_CHOICES:
        raise UserError(f"--amp: '{amp}' is not one of {', '.join(AMP_CHOICES)}")
    if amp == "off" or (amp == "auto" and device.type != "cuda"):
        return None
    if amp == "auto":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[amp]


def precision_name(dtype: torch.dtype | None) -> str:
    """``float32``, ``bfloat16`` or ``float16``: how a run records its precision."""
    return PRECISIONS[dtype]
