"""What the web page keeps for each visitor between an upload and the threshold slider, bounded.

Per session: the photo and its probability map, both at display size (the caller shrinks them:
a 40 MP upload keeps a few MB, not a 160 MB float map). At most ``capacity`` sessions are kept
(the least recently used is dropped first); a session is dropped when its page closes
(``drop``) or ``ttl`` seconds after it was last used, so memory does not grow with the number
of visitors or requests. Safe to use from gradio's worker threads.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import numpy as np
from PIL import Image


class Shown(NamedTuple):
    """A photo and its probability map (float32, same size), as the page shows them."""

    image: Image.Image
    probability: np.ndarray


class Sessions:
    """Session id -> its last ``Shown``, bounded in count and in time."""

    def __init__(self, capacity: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        if capacity < 1 or ttl <= 0:
            raise ValueError(f"sessions: capacity {capacity} and ttl {ttl} must be positive")
        self.capacity, self.ttl, self.clock = capacity, ttl, clock
        self._kept: OrderedDict[str, tuple[float, Shown]] = OrderedDict()
        self._lock = threading.Lock()

    def put(self, session: str, shown: Shown) -> None:
        """Keep ``shown`` for ``session``, replacing what it had."""
        with self._lock:
            self._expire()
            self._kept[session] = (self.clock(), shown)
            self._kept.move_to_end(session)
            while len(self._kept) > self.capacity:
                self._kept.popitem(last=False)

    def get(self, session: str) -> Shown | None:
        """What ``session`` keeps (its time limit starts again), or None when it has nothing or it expired."""
        with self._lock:
            self._expire()
            if session not in self._kept:
                return None
            _, shown = self._kept[session]
            self._kept[session] = (self.clock(), shown)
            self._kept.move_to_end(session)
            return shown

    def drop(self, session: str) -> None:
        """Forget ``session`` (its page was closed)."""
        with self._lock:
            self._kept.pop(session, None)

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._kept)

    def nbytes(self) -> int:
        """Bytes of pixels and maps kept, all sessions together."""
        with self._lock:
            self._expire()
            return sum(
                shown.probability.nbytes + len(shown.image.getbands()) * shown.image.width * shown.image.height
                for _, shown in self._kept.values()
            )

    def _expire(self) -> None:
        now = self.clock()
        while self._kept:
            session, (used, _) = next(iter(self._kept.items()))
            if now - used <= self.ttl:
                break
            del self._kept[session]
