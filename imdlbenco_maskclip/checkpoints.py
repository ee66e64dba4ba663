"""Checkpoints in Benco's layout, written atomically, read from this package or from Benco.

A checkpoint is Benco's dict (``model``, ``optimizer``, ``epoch``, ``scaler``, ``args``) so that
Benco's own ``misc.load_model`` reads ours; we add ``model_name``, ``model_args`` and
``best_metric`` so that ``benco test``/``predict`` can rebuild the model without flags.
``args`` is stored as a plain ``argparse.Namespace`` of plain values, which weights-only
loading accepts once ``compat.allow_namespace_checkpoints`` has run.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.atomic import atomic_path
from imdlbenco_maskclip.errors import UserError


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Save ``payload`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def plain_namespace(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` holding only JSON-like values (paths become strings)."""

    def plain(value: Any) -> Any:
        if isinstance(value, (str, int, float, bool)) or value is None:
            return value
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {str(k): plain(v) for k, v in value.items()}
        return str(value)

    return argparse.Namespace(**{k: plain(v) for k, v in vars(args).items()})


def load(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint of this package or Benco's; a bare state dict becomes ``{'model': ...}``."""
    from imdlbenco_maskclip.compat import allow_namespace_checkpoints

    path = Path(path).expanduser()
    if not path.is_file():
        raise UserError(f"--checkpoint: no file {path}")
    allow_namespace_checkpoints()
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for corrupt or foreign files
        raise UserError(f"--checkpoint: cannot read {path} as a PyTorch checkpoint: {error}") from None
    if not isinstance(payload, dict):
        raise UserError(f"--checkpoint: {path} holds a {type(payload).__name__}, not a checkpoint dict")
    if "model" not in payload:
        if payload and all(isinstance(v, torch.Tensor) for v in payload.values()):
            payload = {"model": payload}
        else:
            raise UserError(f"--checkpoint: {path} has no 'model' entry (keys: {', '.join(map(str, payload))})")
    return payload


def model_identity(payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """The model name and options a checkpoint records: ours directly, Benco's via ``args.model``."""
    name = payload.get("model_name")
    args = payload.get("args")
    if name is None and args is not None:
        name = getattr(args, "model", None) if not isinstance(args, dict) else args.get("model")
    return name, dict(payload.get("model_args") or {})


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Strictly load ``state`` (a DDP ``module.`` prefix is removed); mismatches name ``source``."""
    if state and all(key.startswith("module.") for key in state):
        state = {key[len("module."):]: value for key, value in state.items()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        raise UserError(f"{source}: weights do not fit the model built from its options: {error}") from None
