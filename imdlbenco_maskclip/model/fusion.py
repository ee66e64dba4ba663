"""CLIP-to-side fusion: CLIP patch tokens query the side tokens and the result is added.

Per fusion layer: a 1x1 projection of the CLIP map to the side width (applied on CLIP's own
grid and then resized, which equals resizing first because bilinear weights sum to one),
channel LayerNorm (eps 1e-6), multi-head attention with queries from the CLIP tokens and
keys/values from the side tokens, the attention's output projection and a LayerNorm (torch's
default eps 1e-5), added to the side tokens: the published ``AttentionFusion``'s eps values.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imdlbenco_maskclip.model.attention import MultiHeadAttention


class ClipToSideFusion(nn.Module):
    """One fusion layer from CLIP width ``clip_dim`` into side width ``side_dim``."""

    def __init__(self, clip_dim: int, side_dim: int, heads: int) -> None:
        super().__init__()
        self.clip_proj = nn.Linear(clip_dim, side_dim)
        self.clip_norm = nn.LayerNorm(side_dim, eps=1e-6)
        self.attn = MultiHeadAttention(side_dim, heads)
        self.out_norm = nn.LayerNorm(side_dim)

    def forward(self, side: torch.Tensor, clip_tokens: torch.Tensor, clip_grid: tuple[int, int]) -> torch.Tensor:
        """``side`` B x h x w x C, ``clip_tokens`` B x g*g x Cc on ``clip_grid`` -> B x h x w x C."""
        batch, height, width, dim = side.shape
        clip = self.clip_proj(clip_tokens).view(batch, *clip_grid, dim)
        if tuple(clip_grid) != (height, width):
            clip = F.interpolate(clip.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
            clip = clip.permute(0, 2, 3, 1)
        query = self.clip_norm(clip).reshape(batch, height * width, dim)
        fused = self.attn(query, side.reshape(batch, height * width, dim))
        return side + self.out_norm(fused).view(batch, height, width, dim)
