"""Stop a training at the first loss that is not finite, in every process at the same step.

``FiniteLossGuard`` is a forward hook on the trained network that checks each step's
``backward_loss``; its message names the epoch, the step and the last checkpoint written,
which holds good weights.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.host.runtime import Runtime


class TrainingDiverged(UserError):
    """The loss became NaN or infinite; the message names the epoch, step and process."""


class FiniteLossGuard:
    """A forward hook that stops training at the first non-finite ``backward_loss``.

    Under torchrun the processes share their losses at every step, so all of them stop at the
    same step with the same message instead of one raising while the others wait in the next
    collective. It also keeps the loss of the last step and the epoch's sum for the console.
    """

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.checkpoint: Path | None = None
        self.saved_epoch: int | None = None
        self.epoch = 0
        self.step = 0
        self.last_loss: float | None = None
        self.loss_sum = 0.0

    def start_epoch(self, epoch: int) -> None:
        self.epoch, self.step, self.last_loss, self.loss_sum = epoch, 0, None, 0.0

    def saved(self, checkpoint: Path, epoch: int) -> None:
        """Good weights of ``epoch`` are now in ``checkpoint``."""
        self.checkpoint, self.saved_epoch = checkpoint, epoch

    @property
    def mean_loss(self) -> float | None:
        return self.loss_sum / self.step if self.step else None

    def __call__(self, module: torch.nn.Module, args: Any, output: Any) -> None:
        if not module.training or not isinstance(output, dict) or output.get("backward_loss") is None:
            return
        loss = output["backward_loss"].detach().float().mean().reshape(1)
        if self.runtime.distributed:
            import torch.distributed as dist

            gathered = [torch.empty_like(loss) for _ in range(self.runtime.world_size)]
            dist.all_gather(gathered, loss)
            losses = torch.cat(gathered).tolist()
        else:
            losses = loss.tolist()
        bad = [rank for rank, value in enumerate(losses) if not math.isfinite(value)]
        if bad:
            raise TrainingDiverged(self._message(losses, bad, output))
        self.last_loss = losses[self.runtime.rank]
        self.loss_sum += self.last_loss
        self.step += 1

    def _message(self, losses: list[float], bad: list[int], output: dict) -> str:
        where = f"at epoch {self.epoch}, step {self.step}"
        if self.runtime.distributed:
            processes = ", ".join(f"{rank} ({losses[rank]})" for rank in bad)
            what = f"the loss stopped being finite in process(es) {processes} of {self.runtime.world_size} {where}; every process stops here"
        else:
            parts = {k: float(v) for k, v in (output.get("visual_loss") or {}).items()}
            what = f"the loss became {losses[0]} {where} (loss terms: {parts})"
        if self.checkpoint is None:
            kept = "No checkpoint was written before this (the first is written at the end of an epoch), so a new run starts from scratch"
        else:
            kept = f"The last good weights are in {self.checkpoint} (after epoch {self.saved_epoch}); --resume auto continues from there"
        return f"{what}. {kept}. Try a lower --lr, or --amp off."
