"""Multi-head attention with separate query and key/value sequences, on SDPA.

The fusion, the decoder's text query and the detection head all use this one module: four
``dim x dim`` projections (as ``nn.MultiheadAttention``) around
``torch.nn.functional.scaled_dot_product_attention``, which picks a fused kernel where the
device has one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


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
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(query.shape[0], query.shape[1], -1))
