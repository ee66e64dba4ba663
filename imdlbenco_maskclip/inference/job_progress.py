"""The progress bar of a ``benco predict`` job: one, on the main process, for the whole job.

Under torchrun the main process sees only its own share. Shares are cut to equal sizes, so the
share's fraction done is the job's: the bar counts the job's images as the share's progress
scaled by (job's images / share's images), which gives the job's images/s and ETA without any
collective call per step (one could hang when shares end at different times).
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm


class JobProgress:
    """``update(n)`` after each of the share's ``n`` images; ``close()`` at the end."""

    def __init__(
        self, share: int, job: int, processes: int, enabled: bool = True, stream: TextIO | None = None
    ) -> None:
        self.share, self.job = share, job
        self.done = 0
        self.started = time.perf_counter()
        described = "predict" if processes == 1 else f"predict ({processes} processes, estimated from process 0)"
        self.bar = tqdm(
            total=job,
            desc=described,
            unit="image",
            disable=not enabled or share == 0,
            file=stream or sys.stderr,
            bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.0f}/{total} [{elapsed}<{remaining}, {rate_fmt}]",
        )
        if enabled and share == 0 and job:
            print(f"predict: nothing left for process 0; {job} images left for the others", file=stream or sys.stderr)

    def update(self, images: int) -> None:
        self.done += images
        self.bar.update(min(self.job, self.done * self.job / self.share) - self.bar.n)

    def close(self) -> None:
        self.bar.close()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started
