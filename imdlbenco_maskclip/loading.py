"""``load_model``: the one way to get a trained model from a checkpoint file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch


def load_model(
    checkpoint: str | Path,
    device: str | torch.device = "cpu",
    model_name: str | None = None,
    **model_options: Any,
) -> torch.nn.Module:
    """The model a checkpoint holds, with its weights, on ``device``, in eval mode.

    ``model_name`` names the model when the file does not record it (a checkpoint of Benco's
    ``save_model`` for some model); ``model_options`` (the model's own ``__init__``
    parameters) override the options the checkpoint records.
    """
    from imdlbenco_maskclip import model_builder

    model, _ = model_builder.from_checkpoint(str(checkpoint), model_name, dict(model_options), [], None)
    return model.to(torch.device(device)).eval()
