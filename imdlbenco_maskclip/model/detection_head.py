"""Detection head: the CLIP class tokens of all taps, compared with the two prompt features.

The T class tokens (one per tap) go through one ``nn.MultiheadAttention`` self-attention
layer (packed in-projection, its own initialization) with a residual and a LayerNorm, dropout,
are averaged, projected to the text embedding width without bias and scored against the
L2-normalized real/fake text features: two logits per image, as the published
``CLSAttentionAggregator`` with one layer computes them.
"""

from __future__ import annotations

import torch
from torch import nn


class DetectionHead(nn.Module):
    """Class tokens B x T x ``clip_dim`` and text features 2 x ``embed_dim`` -> logits B x 2."""

    def __init__(self, clip_dim: int, embed_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = nn.MultiheadAttention(clip_dim, heads, batch_first=True)
        self.norm = nn.LayerNorm(clip_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(clip_dim, embed_dim, bias=False)

    def forward(self, cls_tokens: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        attended, _ = self.attn(cls_tokens, cls_tokens, cls_tokens, need_weights=False)
        x = self.dropout(self.norm(cls_tokens + attended)).mean(dim=1)
        with torch.autocast(x.device.type, enabled=False):
            return self.proj(x.float()) @ text_features.float().t()
