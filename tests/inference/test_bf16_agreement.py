"""bf16 does not change the answers: ``Predictor`` in bf16 autocast against fp32 on the same photos.

Bounds (issue 18): masks within 0.02 of fp32 everywhere, at most 0.1% of the pixel decisions at
0.5 different, fake probabilities within 0.01. Checked on a tiny MaskCLIP trained for a few
epochs by ``benco train``'s code, and on the paper setting's network at full size with random
weights. An untrained network's map of a photo sits near 0.5 (the paper network's map of
astronaut has 1.4% of its pixels within 0.002 of 0.5), where bf16's rounding (mean 0.002
there) flips 0.4-0.7% of the decisions; so on photos the untrained network is held to the
mask and probability bounds, and to all three on random pixels, as the issue measured it.
The bf16 path is the one ``--amp auto`` takes on a CPU with native bf16; ``--amp bf16``
takes it on any CPU, so the test runs everywhere. The mask and detection heads already
compute in fp32 under autocast (``mask_decoder``, ``detection_head``).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from imdlbenco_maskclip import Predictor
from imdlbenco_maskclip.cli import benco

MAX_MASK_DIFFERENCE = 0.02
MAX_DECISIONS_CHANGED = 0.001
MAX_PROBABILITY_DIFFERENCE = 0.01


def agreement(model: torch.nn.Module, image_size: int, photos: list) -> dict:
    """The largest mask difference, the share of pixel decisions at 0.5 that differ and the
    largest fake-probability difference between bf16 and fp32 predictions of ``photos``."""
    exact = list(Predictor(model, image_size, amp="off").predict_many(photos, batch_size=4))
    low = Predictor(model, image_size, amp="bf16")
    assert low.precision == "bfloat16"
    fast = list(low.predict_many(photos, batch_size=4))
    changed = sum(int(((a.mask > 0.5) != (b.mask > 0.5)).sum()) for a, b in zip(exact, fast))
    return {
        "mask": max(float(np.abs(a.mask - b.mask).max()) for a, b in zip(exact, fast)),
        "decisions": changed / sum(a.mask.size for a in exact),
        "probability": max(abs(a.fake_probability - b.fake_probability) for a, b in zip(exact, fast)),
        "masked share": float(np.mean([(a.mask > 0.5).mean() for a in exact])),
    }


def assert_within_bounds(found: dict) -> None:
    assert found["mask"] <= MAX_MASK_DIFFERENCE, found
    assert found["decisions"] <= MAX_DECISIONS_CHANGED, found
    assert found["probability"] <= MAX_PROBABILITY_DIFFERENCE, found


@pytest.fixture(scope="module")
def trained_tiny(opensdi_root, tmp_path_factory):
    """A tiny MaskCLIP after 6 epochs of ``benco train`` on the synthetic sd15 rows (64 px)."""
    run = tmp_path_factory.mktemp("trained_tiny")
    arguments = ["train", "--model", "MaskCLIP", "--setting", "tiny", "--data_path", str(opensdi_root)]
    arguments += ["--generators", "sd15", "--image_size", "64", "--batch_size", "4", "--epochs", "6", "--lr", "1e-3"]
    arguments += ["--augment", "none", "--edge_mask_width", "3", "--device", "cpu", "--num_workers", "0"]
    assert benco.main([*arguments, "--val_fraction", "0.2", "--output_dir", str(run)]) == 0
    return run / "checkpoint-last.pth"


def synthetic_photos(opensdi_root) -> list[Image.Image]:
    from dataset_adapters.rows import iter_shard_images

    shards = sorted(str(p) for p in (opensdi_root / "data").glob("*.parquet"))
    return [load() for _, _, load in iter_shard_images(shards)]


@pytest.mark.slow  # a short training run
def test_bf16_agrees_with_fp32_on_a_trained_tiny_model(trained_tiny, opensdi_root):
    model = Predictor.from_checkpoint(trained_tiny, device="cpu").model
    photos = synthetic_photos(opensdi_root)
    found = agreement(model, 64, photos)
    assert len(photos) >= 80 and found["masked share"] > 0.01  # the trained model marks pixels
    assert_within_bounds(found)


@pytest.mark.slow  # the full-size paper network at 512 px
def test_bf16_agrees_with_fp32_on_the_paper_network():
    from skimage import data

    from imdlbenco_maskclip.model import MaskCLIP

    torch.manual_seed(0)
    model = MaskCLIP("paper")
    noise = np.random.default_rng(0).integers(0, 256, (512, 512, 3), dtype=np.uint8)
    assert_within_bounds(agreement(model, 512, [noise]))
    on_photos = agreement(model, 512, [data.astronaut(), data.coffee()])
    assert on_photos["mask"] <= MAX_MASK_DIFFERENCE and on_photos["probability"] <= MAX_PROBABILITY_DIFFERENCE
