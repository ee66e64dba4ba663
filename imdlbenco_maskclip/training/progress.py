"""The console of ``benco train``: one progress bar per epoch and one summary line per epoch.

Benco's ``train_one_epoch`` iterates over whatever loader it is given and runs one step per
batch, so the bar wraps the loader (one tick per batch it hands out) and asks for the loss of
the step just run. Benco's own per-step lines go to a log file (``workarounds.benco_prints_to``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TextIO

import torch
from tqdm import tqdm


class EpochProgress:
    """``loader`` with a tqdm bar: the last step's loss, learning rate, images/s over all processes, ETA.

    ``enabled=None`` shows the bar only on a terminal, so logs and pipes get the summary lines alone.
    """

    def __init__(
        self,
        loader: Iterable,
        description: str,
        optimizer: torch.optim.Optimizer,
        last_loss: Callable[[], float | None],
        world_size: int = 1,
        enabled: bool | None = None,
        stream: TextIO | None = None,
    ) -> None:
        self.loader = loader
        self.description = description
        self.optimizer = optimizer
        self.last_loss = last_loss
        self.world_size = world_size
        self.enabled = enabled
        self.stream = stream
        self.images = 0
        self.seconds = 0.0

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator[Any]:
        bar = tqdm(
            total=len(self),
            desc=self.description,
            unit="step",
            leave=False,
            disable=False if self.enabled else None if self.enabled is None else True,
            file=self.stream,
        )
        started = time.perf_counter()
        try:
            for batch in self.loader:
                yield batch  # Benco runs the step before it asks for the next batch
                self.images += _batch_size(batch) * self.world_size
                self.seconds = time.perf_counter() - started
                postfix = {
                    "lr": f"{self.optimizer.param_groups[0]['lr']:.2e}",
                    "img/s": f"{self.images / max(self.seconds, 1e-9):.1f}",
                }
                loss = self.last_loss()
                if loss is not None:
                    postfix = {"loss": f"{loss:.4f}", **postfix}
                bar.set_postfix(postfix, refresh=False)
                bar.update()
        finally:
            bar.close()

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds else 0.0


def _batch_size(batch: Any) -> int:
    image = batch.get("image") if isinstance(batch, dict) else None
    return int(image.shape[0]) if isinstance(image, torch.Tensor) else 0


def summary_line(
    epoch: int,
    epochs: int,
    loss: float | None,
    score: tuple[str, float, bool] | None,
    images_per_second: float,
    seconds: float,
) -> str:
    """``epoch 3/50: loss 0.4123, validation pixel F1 0.5321 (best), 123.4 images/s, 2m31s``;
    ``score`` is (what was scored, its pixel F1, whether it is the best so far)."""
    parts = [f"epoch {epoch + 1}/{epochs}:"]
    if loss is not None:
        parts.append(f"loss {loss:.4f},")
    if score is not None:
        name, value, best = score
        parts.append(f"{name} pixel F1 {value:.4f}{' (best)' if best else ''},")
    minutes, rest = divmod(int(seconds), 60)
    parts.append(f"{images_per_second:.1f} images/s, {minutes}m{rest:02d}s")
    return " ".join(parts)
