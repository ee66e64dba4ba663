"""Multi-head attention with separate query and key/value sequences, and the attention kernel
every part of the side network uses.

The fusion, the decoder's text query and the detection head all use ``MultiHeadAttention``:
four ``dim x dim`` projections (as ``nn.MultiheadAttention``) around ``attend``, which is
``torch.nn.functional.scaled_dot_product_attention`` (a fused kernel where the device has
one) except in bf16 on the CPU without gradient, where two bf16 matrix products around a
softmax are 2-3x faster than SDPA's CPU kernel (torch 2.14, AVX512-BF16; see the function).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

SCORE_BUDGET = 1 << 25
"""Most attention scores (elements) the CPU bf16 path holds at once; queries go in chunks
beyond it (64 MB in bf16: one 1024-token global side block of a 512-px image is 12.6M)."""


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float | None = None) -> torch.Tensor:
    """softmax(q kᵀ · scale) v over ... x L x d tensors; ``scale`` defaults to d^-0.5.

    In bf16 on the CPU without gradient the scores are explicit: oneDNN's bf16 products use
    the CPU's bf16 dot products, while SDPA's CPU kernel computes in fp32 (the paper
    setting's eval forward at 512 px: 0.6-0.65 of its time with SDPA, in one run on a 2-core
    AVX512-BF16 EPYC). Queries go in chunks so that the scores stay within ``SCORE_BUDGET``.
    Everywhere else (fp32, GPUs, training) SDPA keeps its fused kernels.
    """
    if not (q.device.type == "cpu" and q.dtype == torch.bfloat16 and not torch.is_grad_enabled()):
        return F.scaled_dot_product_attention(q, k, v, scale=scale)
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    keys = k.transpose(-2, -1)
    rows = max(1, SCORE_BUDGET // max(1, q[..., 0, 0].numel() * k.shape[-2]))
    parts = [
        torch.matmul(q[..., i : i + rows, :] * scale, keys).softmax(dim=-1) @ v for i in range(0, q.shape[-2], rows)
    ]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-2)


class MultiHeadAttention(nn.Module):
    """Attention of ``query`` tokens over ``context`` tokens (itself when omitted)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"attention width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, dim = x.shape
        return x.view(batch, length, self.heads, dim // self.heads).transpose(1, 2)

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` B x Lq x C, ``context`` B x Lk x C -> B x Lq x C."""
        context = query if context is None else context
        q = self._split(self.q_proj(query))
        k = self._split(self.k_proj(context))
        v = self._split(self.v_proj(context))
        out = attend(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1))
