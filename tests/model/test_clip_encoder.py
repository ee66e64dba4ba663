"""The frozen CLIP's visual tower under CPU bf16 autocast at batch > 1."""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode

from imdlbenco_maskclip.model import MaskCLIP


class BatchedProducts(TorchDispatchMode):
    """Records the shapes of every ``bmm`` the model runs."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[tuple[int, ...], tuple[int, ...]]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func is torch.ops.aten.bmm.default:
            self.shapes.append((tuple(args[0].shape), tuple(args[1].shape)))
        return func(*args, **(kwargs or {}))


def test_the_projections_of_a_batch_are_matrix_products_not_one_per_token():
    """nn.MultiheadAttention projects a transposed view under autocast; when that view is not
    contiguous, ``linear`` runs as a ``bmm`` with the weight expanded to one copy per token
    (1.6 GB per block for ViT-L at batch 2, 20x slower). Its only ``bmm`` here must be the
    attention's own products over batch x heads."""
    model = MaskCLIP("tiny").eval()
    width = model.clip.width
    recorded = BatchedProducts()
    with torch.no_grad(), torch.autocast("cpu", torch.bfloat16), recorded:
        taps = model.clip(torch.randn(2, 3, 64, 64))
    assert taps.tokens[0].shape[0] == 2
    tokens = taps.tokens[0].shape[1] + 1
    assert not [shapes for shapes in recorded.shapes if shapes[1][:2] == (tokens, width)], recorded.shapes
