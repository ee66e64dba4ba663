"""What the web page keeps per visitor stays bounded: in count, in time and in size."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from imdlbenco_maskclip.inference.sessions import Sessions, Shown
from imdlbenco_maskclip.inference.web_page import DISPLAY_SIDE, at_display_size


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def shown(side: int = 4) -> Shown:
    return Shown(Image.new("RGB", (side, side)), np.zeros((side, side), np.float32))


def test_the_least_recently_used_session_goes_first_beyond_the_capacity():
    sessions = Sessions(capacity=2, ttl=60, clock=Clock())
    first, second, third = shown(), shown(), shown()
    sessions.put("a", first)
    sessions.put("b", second)
    assert sessions.get("a") is first  # "a" used again: "b" is now the oldest
    sessions.put("c", third)
    assert len(sessions) == 2 and sessions.get("b") is None
    assert sessions.get("a") is first and sessions.get("c") is third


def test_a_session_expires_its_time_limit_after_its_last_use_and_can_be_dropped():
    clock = Clock()
    sessions = Sessions(capacity=8, ttl=60, clock=clock)
    sessions.put("a", shown())
    sessions.put("b", shown())
    clock.now = 50
    assert sessions.get("a") is not None  # used: its limit starts again
    clock.now = 100
    assert sessions.get("b") is None and sessions.get("a") is not None
    sessions.drop("a")
    sessions.drop("never seen")
    assert len(sessions) == 0 and sessions.nbytes() == 0


def test_a_large_photo_is_kept_at_display_size():
    photo = Image.new("RGB", (6000, 4000), "white")
    probability = np.zeros((4000, 6000), np.float32)
    probability[:, 3000:] = 1.0  # the right half
    kept = at_display_size(photo, probability)
    assert kept.image.size == (DISPLAY_SIDE, 683) and kept.probability.shape == (683, DISPLAY_SIDE)
    assert kept.probability.dtype == np.float32
    assert kept.probability[:, :500].max() == 0 and kept.probability[:, 530:].min() == 1
    sessions = Sessions(capacity=4, ttl=60)
    sessions.put("a", kept)
    assert sessions.nbytes() == DISPLAY_SIDE * 683 * (3 + 4)  # not 6000 x 4000 x 7
    small = Image.new("RGB", (300, 200))
    assert at_display_size(small, np.zeros((200, 300), np.float32)).image is small


def test_bounds_must_be_positive():
    with pytest.raises(ValueError, match="capacity 0"):
        Sessions(capacity=0, ttl=60)
