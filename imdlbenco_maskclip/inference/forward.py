"""One inference step: a batch with every key Benco's models read, through the model.

Benco's datasets give ``image``, ``mask``, ``edge_mask`` (with an edge width), ``label``,
``shape``, ``name`` and, when padding, ``shape_mask``; many of Benco's models compute their
loss in every forward and read the targets even at test time. The protocol, ``Predictor`` and
the demo all call the model through ``forward`` so each model sees the same keys everywhere.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch


def image_batch(
    images: torch.Tensor, shown: Sequence[tuple[int, int]], names: Sequence[str], padding: bool
) -> dict[str, Any]:
    """A Benco batch for images without targets: ``images`` B x 3 x H x W (normalized as Benco
    normalizes), each showing its picture in the top-left ``shown`` (height, width) when
    ``padding``; empty masks, label 0."""
    batch_size, _, height, width = images.shape
    empty = images.new_zeros(batch_size, 1, height, width)
    content = torch.tensor(list(shown))
    batch = {
        "image": images,
        "mask": empty,
        "name": list(names),
        "label": torch.zeros(batch_size, dtype=torch.long, device=images.device),
        "shape": content if padding else torch.tensor([[height, width]] * batch_size),
        "origin_shape": content,
    }
    if padding:
        shape_mask = empty.clone()
        for i, (h, w) in enumerate(shown):
            shape_mask[i, :, :h, :w] = 1
        batch["shape_mask"] = shape_mask
    return batch


def forward(model: torch.nn.Module, batch: dict[str, Any]) -> dict[str, Any]:
    """The model's output for a batch in eval mode without gradient; a missing ``edge_mask``
    (datasets built without an edge width, ``image_batch``) is an empty one."""
    if "edge_mask" not in batch:
        batch = {**batch, "edge_mask": torch.zeros_like(batch["mask"])}
    model.eval()
    with torch.no_grad():
        return model(**batch)
