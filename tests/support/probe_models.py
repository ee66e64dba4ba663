"""Small models registered in Benco's ``MODELS`` that report what ``benco train`` did to them.

``AmpProbe`` records, at every training forward, the autocast state Benco's loop ran it under,
the dtype of a matrix product inside it, the sample names it was given and the function that
called it. ``NaNProbe`` returns a NaN loss in one process at one step. Both follow Benco's
forward contract, so Benco's own ``train_one_epoch`` and ``test_one_epoch`` run them.
"""

from __future__ import annotations

import inspect

import torch
import torch.distributed as dist
import torch.nn.functional as F
from IMDLBenCo.registry import MODELS

RECORDS: list[dict] = []


class _Probe(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mix = torch.nn.Linear(3, 3)
        self.head = torch.nn.Conv2d(3, 1, kernel_size=3, padding=1)

    def _outputs(self, image: torch.Tensor, mask: torch.Tensor) -> tuple[dict, torch.Tensor]:
        mixed = self.mix(image.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        logits = self.head(mixed).float()
        loss = F.binary_cross_entropy_with_logits(logits, mask.float())
        return {
            "backward_loss": loss,
            "pred_mask": torch.sigmoid(logits),
            "visual_loss": {"total": loss.detach()},
        }, mixed


def _caller() -> tuple[str, str]:
    """(module, function) of the first frame outside torch and this file: who called the model."""
    for frame in inspect.stack()[1:]:
        module = frame.frame.f_globals.get("__name__", "")
        if not module.startswith("torch") and module != __name__:
            return module, frame.function
    return "", ""


@MODELS.register_module()
class AmpProbe(_Probe):
    def forward(self, image: torch.Tensor, mask: torch.Tensor, name=None, **kwargs) -> dict:
        output, mixed = self._outputs(image, mask)
        if self.training:
            device = image.device.type
            RECORDS.append(
                {
                    "autocast": torch.is_autocast_enabled(device),
                    "autocast_dtype": torch.get_autocast_dtype(device),
                    "matmul_dtype": mixed.dtype,
                    "names": list(name) if name is not None else [],
                    "caller": _caller(),
                }
            )
        return output


@MODELS.register_module()
class NaNProbe(_Probe):
    """``backward_loss`` is NaN at the ``nan_step``-th training forward (from 0) of process ``nan_rank``."""

    def __init__(self, nan_rank: int = 0, nan_step: int = 1) -> None:
        super().__init__()
        self.nan_rank, self.nan_step = nan_rank, nan_step
        self.steps = 0

    def forward(self, image: torch.Tensor, mask: torch.Tensor, **kwargs) -> dict:
        output, _ = self._outputs(image, mask)
        if self.training:
            rank = dist.get_rank() if dist.is_initialized() else 0
            if rank == self.nan_rank and self.steps == self.nan_step:
                output["backward_loss"] = output["backward_loss"] * float("nan")
            self.steps += 1
        return output
