"""Checkpoints in Benco's layout: the one module that writes and reads their entries.

A checkpoint is Benco's dict (``model``, ``optimizer``, ``epoch``, ``scaler``, ``args``) so that
Benco's own ``misc.load_model`` reads ours; we add ``model_name`` and ``model_args`` so that
``benco test``/``predict`` can rebuild the model without flags, ``best_metric``, ``history``
and ``precision`` so that ``--resume`` goes on where the run stopped, ``selected_on`` and
``selection_data`` so that ``benco test`` can say what the weights were chosen on, and
``val_threshold`` (a best checkpoint chosen on held-out validation: the pixel threshold that
maximized mean pixel F1 there) for ``benco test``, ``predict`` and ``serve``. ``args`` is
stored as a plain ``argparse.Namespace`` of plain values, which weights-only loading accepts
once ``workarounds.allow_namespace_checkpoints`` has run. Everything else sees a ``TrainingState``.
"""

from __future__ import annotations

import argparse
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.common.atomic import atomic_path
from imdlbenco_maskclip.common.errors import UserError

DEFAULT_IMAGE_SIZE = 512
"""The side a model is tested at when neither the command nor the checkpoint's run says."""


@dataclass
class TrainingState:
    """What a checkpoint holds. Benco's own checkpoints, older ones of this package and bare
    state dicts lack some entries: those read as None (or empty)."""

    weights: dict[str, torch.Tensor]
    model_name: str | None = None
    model_args: dict[str, Any] = field(default_factory=dict)
    run_args: dict[str, Any] = field(default_factory=dict)
    epoch: int | None = None
    best_metric: float | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    precision: str | None = None
    selected_on: str | None = None
    selection_data: dict[str, Any] | None = None
    val_threshold: float | None = None
    optimizer: dict[str, Any] | None = None
    scaler: dict[str, Any] | None = None

    @property
    def named_model(self) -> str | None:
        """The model the file names: ours as ``model_name``, Benco's as ``args.model``."""
        return self.model_name or self.run_args.get("model")

    @property
    def image_size(self) -> int | None:
        """The side the run fed its images at (``args.image_size``), None when not recorded."""
        try:
            size = int(self.run_args.get("image_size"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            return None
        return size if size > 0 else None

    @property
    def padding(self) -> bool | None:
        """Whether the run zero-padded its images (Benco's ``args.if_padding``) rather than
        resizing them (``args.if_resizing``); None when the file says neither."""
        if self.run_args.get("if_padding"):
            return True
        if self.run_args.get("if_resizing") or "if_padding" in self.run_args:
            return False
        return None

    def input_handling(self, image_size: int | None, padding: bool | None) -> tuple[int, bool]:
        """The side and padding to feed images at: those given, else the run's, else
        ``DEFAULT_IMAGE_SIZE`` and resizing."""
        return image_size or self.image_size or DEFAULT_IMAGE_SIZE, bool(self.padding) if padding is None else padding


def save_atomic(payload: dict[str, Any], path: Path) -> None:
    """Save ``payload`` to ``path`` atomically, flushed to disk before the rename."""
    with atomic_path(path) as temporary, open(temporary, "wb") as handle:
        torch.save(payload, handle)
        handle.flush()
        os.fsync(handle.fileno())


def write(state: TrainingState, path: Path) -> None:
    """Write ``state`` to ``path`` atomically; without optimizer state it holds no ``optimizer``
    and ``scaler`` entries (a weights-only checkpoint)."""
    payload = {
        "model": state.weights,
        "epoch": state.epoch,
        "args": _plain_namespace(state.run_args),
        "model_name": state.model_name,
        "model_args": state.model_args,
        "best_metric": state.best_metric,
        "history": state.history,
        "precision": state.precision,
        "selected_on": state.selected_on,
        "selection_data": state.selection_data,
        "val_threshold": state.val_threshold,
    }
    if state.optimizer is not None:
        payload.update(optimizer=state.optimizer, scaler=state.scaler)
    save_atomic(payload, path)


def read(path: str | Path) -> TrainingState:
    """Read a checkpoint of this package or Benco's, or a bare state dict; the weights lose
    DDP's ``module.`` prefix. The file is memory-mapped (files torch writes since 1.6): its
    tensors are read from disk when first used."""
    payload = _load(Path(path).expanduser())
    args = payload.get("args")
    epoch = payload.get("epoch")
    return TrainingState(
        weights=_without_ddp_prefix(payload["model"]),
        model_name=payload.get("model_name"),
        model_args=dict(payload.get("model_args") or {}),
        run_args=dict(args) if isinstance(args, dict) else dict(vars(args)) if args is not None else {},
        epoch=int(epoch) if epoch is not None else None,
        best_metric=payload.get("best_metric"),
        history=list(payload.get("history") or []),
        precision=payload.get("precision"),
        selected_on=payload.get("selected_on"),
        selection_data=payload.get("selection_data"),
        val_threshold=payload.get("val_threshold"),
        optimizer=payload.get("optimizer"),
        scaler=payload.get("scaler"),
    )


def _load(path: Path) -> dict[str, Any]:
    """The file's dict; a bare state dict becomes ``{'model': ...}``."""
    from imdlbenco_maskclip.host.workarounds import allow_namespace_checkpoints

    if not path.is_file():
        raise UserError(f"--checkpoint: no file {path}")
    allow_namespace_checkpoints()
    try:
        # Memory-mapped: a tensor is read from the file only when it is used (a published file's
        # optimizer never is), and weights assigned into a model are not copied.
        payload = torch.load(path, map_location="cpu", weights_only=True, mmap=zipfile.is_zipfile(path))
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


def _without_ddp_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    if state and all(key.startswith("module.") for key in state):
        return {key[len("module.") :]: value for key, value in state.items()}
    return state


def plain(value: Any) -> Any:
    """A JSON-like value: numbers, strings, booleans, None, and lists and dicts of them; any
    other value (a path) becomes its text."""
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    return str(value)


def _plain_namespace(values: dict[str, Any]) -> argparse.Namespace:
    """``values`` as a Namespace of JSON-like values (paths become strings)."""
    return argparse.Namespace(**{k: plain(v) for k, v in values.items()})
