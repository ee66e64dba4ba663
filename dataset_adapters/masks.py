"""Benco's mask binarization and edge mask, computed on uint8 with the same result.

Benco binarizes with ``np.mean(mask, axis=2) > 127.5`` in float64 and finds the edge band with
``EdgeMaskGenerator``: two float conv2d passes with a cross-shaped kernel at full resolution, about
80% of its time per sample. For three uint8 channels the mean exceeds 127.5 exactly when their sum
is at least 383. The edge band is where the cross dilation of the mask and the cross dilation of its
complement (both zero-padded) are 1; that is the morphological gradient with a cross, and a cross
is the union of a horizontal and a vertical line, so four 1-D passes in OpenCV give it.
"""

from __future__ import annotations

import cv2
import numpy as np

_SUM_THRESHOLD = 383  # mean of three uint8 channels > 127.5  <=>  their sum >= 383


def binarize(mask: np.ndarray) -> np.ndarray:
    """HxW uint8 in {0, 1}: 1 where the channel mean of the HxWxC mask exceeds 127.5 (Benco's rule)."""
    if mask.dtype == np.uint8 and mask.ndim == 3 and mask.shape[2] == 3:
        total = mask[:, :, 0].astype(np.uint16)
        total += mask[:, :, 1]
        total += mask[:, :, 2]
        return (total >= _SUM_THRESHOLD).view(np.uint8)
    return (np.mean(mask, axis=2) > 127.5).view(np.uint8)


def edge_mask(binary: np.ndarray, width: int) -> np.ndarray:
    """HxW uint8 in {0, 1}: Benco's ``EdgeMaskGenerator(width)`` band around the 0/1 boundary."""
    if not binary.any() or binary.all():
        return np.zeros_like(binary)
    horizontal = cv2.getStructuringElement(cv2.MORPH_RECT, (width, 1))
    vertical = cv2.getStructuringElement(cv2.MORPH_RECT, (1, width))
    dilated = cv2.max(cv2.dilate(binary, horizontal), cv2.dilate(binary, vertical))
    eroded = cv2.min(cv2.erode(binary, horizontal), cv2.erode(binary, vertical))
    return cv2.subtract(dilated, eroded)
