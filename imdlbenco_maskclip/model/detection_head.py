"""Detection head: the CLIP class tokens of all taps, compared with the two prompt features.

The T class tokens (one per tap) go through one self-attention layer with a residual and a
LayerNorm, are averaged, projected to the text embedding width and scored against the
L2-normalized real/fake text features: two logits per image.
"""

from __future__ import annotations

import torch
from torch import nn

from imdlbenco_maskclip.model.attention import MultiHeadAttention


class DetectionHead(nn.Module):
    """Class tokens B x T x ``clip_dim`` and text features 2 x ``embed_dim`` -> logits B x 2."""

    def __init__(self, clip_dim: int, embed_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.attn = MultiHeadAttention(clip_dim, heads)
        self.norm = nn.LayerNorm(clip_dim)
        self.dropout = nn.Dropout(dropout)
        self.proj = nn.Linear(clip_dim, embed_dim, bias=False)

    def forward(self, cls_tokens: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        x = self.norm(cls_tokens + self.attn(cls_tokens))
        x = self.dropout(x).mean(dim=1)
        device_type = x.device.type
        with torch.autocast(device_type, enabled=False):
            return self.proj(x.float()) @ text_features.float().t()
