"""Telling a state dict of the published OpenSDI code's family from others, at full size: the
frozen CLIP holds more keys than the rest of the network, so an earlier variant without the
published markers must still be recognized (and then listed key by key) rather than read as
some other model's weights. Meta tensors: the names and shapes, nothing allocated."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from imdlbenco_maskclip.model.published import MARKERS, is_published, network_shapes, published_setting

SHAPES = json.loads(
    (Path(__file__).resolve().parents[1] / "support" / "data" / "published_maskclip_vitl_shapes.json").read_text()
)


def meta_state(shapes: dict) -> dict[str, torch.Tensor]:
    return {key: torch.empty(shape, device="meta") for key, shape in shapes.items()}


def test_a_full_size_published_state_without_its_markers_is_still_of_the_family():
    published = meta_state(SHAPES)
    assert is_published(published)
    earlier = {key: value for key, value in published.items() if key not in MARKERS}
    assert sum(key.startswith("clip.") for key in earlier) * 2 > len(earlier)  # the CLIP is most of the keys
    assert is_published(earlier)
    assert published_setting(earlier) == "paper"


def test_this_packages_own_state_dict_is_not_of_the_published_family():
    assert not is_published(meta_state(network_shapes("paper")))
    assert not is_published({"clip.visual.proj": torch.empty(0), "backbone.weight": torch.empty(0)})
