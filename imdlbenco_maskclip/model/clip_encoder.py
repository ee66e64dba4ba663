"""The frozen open_clip CLIP: ``ln_2`` taps of the visual tower and the text tower on a prefix.

The visual tower is run block by block up to the last tap, which is the normalized input of
that block's MLP; nothing after it (the rest of the block, later blocks, ``ln_post``,
``proj``) is computed. The text tower encodes prompt embeddings only up to the end token:
under the causal mask the pooled end-token output does not depend on later positions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ClipTaps:
    """CLIP features of one image batch: ``cls`` B x T x C (token 0 of each tap) and
    ``tokens``, per tap B x g*g x C (the patch tokens on a ``grid`` of g x g)."""

    cls: torch.Tensor
    tokens: list[torch.Tensor]
    grid: tuple[int, int]


class FrozenCLIP(nn.Module):
    """A whole open_clip ``CLIP`` kept frozen and in eval mode, read at ``tap_blocks``.

    Images arrive normalized with CLIP's statistics; they are resized (bilinear,
    align_corners=True) to CLIP's input size.
    """

    def __init__(self, model: nn.Module, tap_blocks: Sequence[int]) -> None:
        super().__init__()
        self.model = model.requires_grad_(False)
        self.tap_blocks = tuple(tap_blocks)
        depth = len(model.visual.transformer.resblocks)
        if not (
            getattr(model.visual.transformer, "batch_first", False) and getattr(model.transformer, "batch_first", False)
        ):
            raise ValueError("FrozenCLIP needs open_clip's batch-first transformers (open_clip_torch >= 2.24)")
        if (
            not self.tap_blocks
            or max(self.tap_blocks) >= depth
            or list(self.tap_blocks) != sorted(set(self.tap_blocks))
        ):
            raise ValueError(f"tap blocks {self.tap_blocks} must be increasing indices below the visual depth {depth}")
        self.image_size = tuple(model.visual.image_size)
        self.width = model.visual.transformer.width
        self.text_width = model.transformer.width
        projection = model.text_projection
        self.embed_dim = projection.shape[1] if isinstance(projection, torch.Tensor) else projection.out_features
        self.train(False)

    def train(self, mode: bool = True) -> FrozenCLIP:
        """Stay in eval mode whatever the parent asks: CLIP's weights never train."""
        return super().train(False)

    def rebuild_buffers(self) -> None:
        """open_clip's causal text mask (``attn_mask``: -inf above the diagonal, 0 elsewhere),
        the one tensor of CLIP its state dict does not hold, on the device of the weights."""
        if getattr(self.model, "attn_mask", None) is None:
            return
        table = self.model.positional_embedding
        length = table.shape[0]
        self.model.attn_mask = torch.full((length, length), float("-inf"), device=table.device).triu_(1)

    def _embed_image(self, image: torch.Tensor) -> torch.Tensor:
        visual = self.model.visual
        x = F.interpolate(image, size=self.image_size, mode="bilinear", align_corners=True)
        x = visual.conv1(x)
        x = x.flatten(2).transpose(1, 2)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def forward(self, image: torch.Tensor) -> ClipTaps:
        """Image B x 3 x H x W (CLIP-normalized) -> the ``ln_2`` taps, without gradient."""
        visual = self.model.visual
        taps: list[torch.Tensor] = []
        with torch.no_grad():
            x = self._embed_image(image)
            for index, block in enumerate(visual.transformer.resblocks[: self.tap_blocks[-1] + 1]):
                x = x + block.ls_1(block.attention(q_x=_sequence_first_in_memory(block.ln_1(x))))
                normed = block.ln_2(x)
                if index in self.tap_blocks:
                    taps.append(normed)
                if index < self.tap_blocks[-1]:
                    x = x + block.ls_2(block.mlp(normed))
        grid = (self.image_size[0] // visual.patch_size[0], self.image_size[1] // visual.patch_size[1])
        return ClipTaps(cls=torch.stack([t[:, 0] for t in taps], dim=1), tokens=[t[:, 1:] for t in taps], grid=grid)

    def embed_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids -> the text tower's input embeddings."""
        return self.model.token_embedding(tokens)

    def encode_prompts(self, prompts: torch.Tensor, eot_index: int) -> torch.Tensor:
        """Prompt embeddings P x L x W (L = ``eot_index`` + 1 positions) -> P x D features.

        Gradients flow to ``prompts`` (the learned contexts) but not to the frozen weights.
        """
        model = self.model
        length = prompts.shape[1]
        x = prompts + model.positional_embedding[:length].to(prompts.dtype)
        mask = model.attn_mask[:length, :length]
        x = model.transformer(x, attn_mask=mask)
        x = model.ln_final(x[:, eot_index])
        projection = model.text_projection
        return projection(x) if isinstance(projection, nn.Linear) else x @ projection.to(x.dtype)


def _sequence_first_in_memory(x: torch.Tensor) -> torch.Tensor:
    """``x`` (B x L x W) laid out sequence-first in memory, seen batch-first.

    ``nn.MultiheadAttention(batch_first=True)`` transposes its input to L x B x W and, under
    autocast (which rules out its fused path), projects that transposed view. For B > 1 the
    view is not contiguous, and ``linear`` then becomes a batched product that copies the
    weight once per token: under CPU bf16 autocast at 224 px, a 1.6 GB copy per CLIP block
    and 20 s per image at batch 2 against 1 s at batch 1. Given this layout, the transpose is
    contiguous and the projection one matrix product; the values are the same.
    """
    return x.transpose(0, 1).contiguous().transpose(0, 1)
