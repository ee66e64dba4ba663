"""Mask decoder: a four-scale pyramid of the side features, queried by the fake-prompt text.

Scales x4, x2, x1 and x0.5 of the side map (transposed convolutions up, max-pool down), each
through 1x1 conv, LayerNorm, 3x3 conv, LayerNorm; all resized to the x4 grid, concatenated
and mixed by a 1x1 conv. The fake text feature, projected to the decoder width, attends over
that map; its output is added at every position; LayerNorm, dropout and a 1x1 conv give one
logit per position of the x4 grid.

Two exact rewrites save most of the work at the x4 grid: the mixing 1x1 conv is applied to
each scale's slice of channels at that scale's own size before resizing (resizing is linear
with weights summing to one, so it commutes with a 1x1 conv), and the single text query
attends without projecting every map position (see ``TextQueryAttention``). The decoder
runs in channels-last layout (activations and convolution weights, so no layout conversions
per call), where the channel LayerNorm is a ``layer_norm`` over the last dimension and a 1x1
convolution a matrix product (``PointwiseConv``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imdlbenco_maskclip.model.attention import MultiHeadAttention


class ChannelNorm(nn.LayerNorm):
    """LayerNorm over the channels of a B x C x H x W map (segment-anything's LayerNorm2d)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class TextQueryAttention(MultiHeadAttention):
    """Attention of one query over a long context, without projecting the context.

    Per head, q.(W_k x + b_k) = (W_k^T q).x + q.b_k, and the attention-weighted mean of
    W_v x + b_v is W_v (weighted mean of x) + b_v (the weights sum to one). So the context
    is read twice, by two small matrix products, instead of being projected twice. The
    products are written out rather than passed to SDPA: with a handful of queries SDPA's
    CPU kernel has no work to split across threads and ran 30x slower here. The q.b_k term
    is the same for every key and cancels in the softmax, as in any attention; it is kept so
    that every parameter takes part in the graph (DistributedDataParallel expects that).
    """

    def forward(self, query: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """``query`` B x 1 x C, ``context`` B x L x C -> B x 1 x C."""
        context = query if context is None else context
        batch, _, dim = context.shape
        head_dim = dim // self.heads
        q = self.q_proj(query).view(batch, self.heads, head_dim) * head_dim**-0.5
        w_k = self.k_proj.weight.to(q.dtype).view(self.heads, head_dim, dim)
        w_v = self.v_proj.weight.to(q.dtype).view(self.heads, head_dim, dim)
        key_bias = (q * self.k_proj.bias.to(q.dtype).view(self.heads, head_dim)).sum(-1, keepdim=True)
        scores = torch.bmm(torch.einsum("bhd,hdc->bhc", q, w_k), context.transpose(1, 2)) + key_bias
        weights = torch.softmax(scores.float(), dim=-1).to(context.dtype)
        mean = torch.bmm(weights, context)
        values = torch.einsum("bhc,hdc->bhd", mean, w_v) + self.v_proj.bias.to(q.dtype).view(self.heads, head_dim)
        return self.out_proj(values.reshape(batch, 1, dim))


class PointwiseConv(nn.Conv2d):
    """A 1x1 convolution computed as a matrix product over the channels-last view of the
    map (PyTorch's CPU convolution takes a slow path for 1x1 kernels on such inputs)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return pointwise(x, self.weight, self.bias)


def pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d`` with a 1x1 ``weight`` (out x in x 1 x 1), as ``F.linear`` on channels-last."""
    out = F.linear(x.permute(0, 2, 3, 1), weight.flatten(1), bias)
    return out.permute(0, 3, 1, 2)


def _lateral(in_channels: int, dim: int) -> nn.Sequential:
    return nn.Sequential(
        PointwiseConv(in_channels, dim),
        ChannelNorm(dim),
        nn.Conv2d(dim, dim, kernel_size=3, padding=1),
        ChannelNorm(dim),
    )


class MaskDecoder(nn.Module):
    """Side features B x ``in_dim`` x h x w and a text feature -> mask logits B x 1 x 4h x 4w."""

    def __init__(self, in_dim: int, dim: int, text_dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        half, quarter = in_dim // 2, in_dim // 4
        self.scales = nn.ModuleList(
            [
                nn.Sequential(
                    nn.ConvTranspose2d(in_dim, half, kernel_size=2, stride=2),
                    ChannelNorm(half),
                    nn.GELU(),
                    nn.ConvTranspose2d(half, quarter, kernel_size=2, stride=2),
                ),
                nn.ConvTranspose2d(in_dim, half, kernel_size=2, stride=2),
                nn.Identity(),
                nn.MaxPool2d(kernel_size=2, stride=2),
            ]
        )
        self.laterals = nn.ModuleList(_lateral(c, dim) for c in (quarter, half, in_dim, in_dim))
        self.fuse = PointwiseConv(4 * dim, dim)
        self.query_proj = nn.Linear(text_dim, dim)
        self.query_attn = TextQueryAttention(dim, heads)
        self.norm = ChannelNorm(dim)
        self.dropout = nn.Dropout(dropout)
        self.predict = PointwiseConv(dim, 1)
        self.to(memory_format=torch.channels_last)

    def forward(self, features: torch.Tensor, text_feature: torch.Tensor) -> torch.Tensor:
        """``features`` B x C x h x w, ``text_feature`` 1 x D or B x D -> logits B x 1 x 4h x 4w (fp32)."""
        features = features.contiguous(memory_format=torch.channels_last)
        size = (features.shape[2] * 4, features.shape[3] * 4)
        slices = self.fuse.weight.split(self.fuse.in_channels // len(self.laterals), dim=1)
        x = None
        for scale, lateral, weight in zip(self.scales, self.laterals, slices):
            y = pointwise(lateral(scale(features)), weight, None)
            if tuple(y.shape[2:]) != size:
                y = F.interpolate(y, size=size, mode="bilinear", align_corners=False)
            x = y if x is None else x + y
        x = x + self.fuse.bias.view(1, -1, 1, 1).to(x.dtype)
        batch, dim = x.shape[:2]
        tokens = x.permute(0, 2, 3, 1).reshape(batch, -1, dim)
        query = self.query_proj(text_feature).to(tokens.dtype).expand(batch, -1).unsqueeze(1)
        x = x + self.query_attn(query, tokens).view(batch, dim, 1, 1)
        x = self.dropout(self.norm(x))
        with torch.autocast(x.device.type, enabled=False):
            return self.predict(x.float())
