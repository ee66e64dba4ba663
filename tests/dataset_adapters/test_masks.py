"""The uint8 binarization and edge band equal Benco's float64 mean and conv2d EdgeMaskGenerator."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
from IMDLBenCo.transforms import EdgeMaskGenerator

from dataset_adapters.masks import binarize, edge_mask


def _benco_binary(mask: np.ndarray) -> np.ndarray:
    return ((np.mean(mask, axis=2, keepdims=True) > 127.5) * 1.0).transpose(2, 0, 1)[0]


def test_binarize_at_the_threshold():
    rng = np.random.default_rng(0)
    # every channel triple whose sum is 380..386, plus random ones
    triples = [
        (a, b, s - a - b)
        for s in range(380, 387)
        for a in range(0, 256, 5)
        for b in range(0, 256, 7)
        if 0 <= s - a - b <= 255
    ]
    near = np.array(triples, dtype=np.uint8).reshape(1, -1, 3)
    anywhere = rng.integers(0, 256, (37, 41, 3), dtype=np.uint8)
    for mask in (near, anywhere):
        assert np.array_equal(binarize(mask), _benco_binary(mask))
    assert binarize(np.array([[[127, 128, 128], [127, 127, 128]]], dtype=np.uint8)).tolist() == [[1, 0]]


def test_binarize_other_dtypes_like_benco():
    mask = np.random.default_rng(1).uniform(0, 255, (9, 11, 3))
    assert np.array_equal(binarize(mask), _benco_binary(mask))


@pytest.mark.parametrize("shape", [(17, 23), (64, 64), (71, 59), (129, 200)])
@pytest.mark.parametrize("width", [1, 3, 7, 15])
def test_edge_mask_equals_benco(shape, width):
    if min(shape) <= width:
        pytest.skip("Benco asserts the image is larger than the kernel")
    rng = np.random.default_rng(width * 1000 + shape[0])
    blocks = (rng.random((shape[0] // 6 + 1, shape[1] // 6 + 1)) > 0.5).astype(np.uint8)
    binary = cv2.resize(blocks, shape[::-1], interpolation=cv2.INTER_NEAREST)
    binary[rng.random(shape) > 0.98] ^= 1  # isolated pixels, also on the border
    binary[0, :] = 1
    expected = EdgeMaskGenerator(width)(binary.astype(np.float64))[0][0]
    assert np.array_equal(edge_mask(binary, width), expected)


@pytest.mark.parametrize("value", [0, 1])
def test_edge_mask_of_constant_masks_is_empty(value):
    binary = np.full((31, 33), value, dtype=np.uint8)
    assert not edge_mask(binary, 7).any()
    assert not EdgeMaskGenerator(7)(binary.astype(np.float64)).any()
