"""What a checkpoint holds, told without building its model (``benco weights info``).

The file is memory-mapped, so its header, tensor count and bytes cost no memory; the check that
its weights fit the model it names compares shapes (MaskCLIP's come from the meta device, other
models are built). The sha256 is the hub's LFS etag for a hub file and is computed for a local
one (of a weight folder: of its ``model.safetensors``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from imdlbenco_maskclip.checkpoints import folder, hub, loading

BLOCK = 1 << 24


@dataclass
class WeightsInfo:
    """A checkpoint described: ``facts`` (label -> text, in the order ``benco weights info``
    prints them) and ``fits``: None when not checked, else the mismatches with the named model
    (empty when the weights load into it)."""

    facts: dict[str, str]
    fits: list[str] | None


def sha256_file(path: Path) -> str:
    """The sha256 of a file, read in 16 MB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def size_text(count: int) -> str:
    """Bytes as a person reads them (``2.19 GB``, ``477.0 MB``)."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.2f} {unit}" if unit == "GB" else f"{count / scale:.1f} {unit}"
    return f"{count} B"


def dtype_names(tensors: Iterable[torch.Tensor]) -> str:
    """The dtypes among ``tensors``, sorted, e.g. ``float32, int64``."""
    return ", ".join(sorted({str(t.dtype).replace("torch.", "") for t in tensors}))


def weights_summary(tensors: Collection[torch.Tensor]) -> str:
    """``N tensors, SIZE (dtypes)``: what a set of weights amounts to."""
    return f"{len(tensors)} tensors, {size_text(sum(t.nbytes for t in tensors))} ({dtype_names(tensors)})"


def tensor_bytes(value: Any) -> tuple[int, int]:
    """(tensors, bytes) in a nested structure of dicts, lists and tensors (an optimizer state)."""
    if isinstance(value, torch.Tensor):
        return 1, value.nbytes
    if isinstance(value, Mapping):
        items = list(value.values())
    elif isinstance(value, (list, tuple)):
        items = list(value)
    else:
        return 0, 0
    counts = [tensor_bytes(item) for item in items]
    return sum(c for c, _ in counts), sum(b for _, b in counts)


def _clip_fact(stored: loading.Checkpoint, name: str) -> str | None:
    if name != "MaskCLIP":
        return None
    from imdlbenco_maskclip.model.build import holds_clip

    if holds_clip(stored.saved.weights):
        return "in the file"
    source = stored.model_options.get("clip_pretrained", "default")
    return "left out; rebuilt from " + ("the setting's pretrained CLIP" if source == "default" else str(source))


def describe(checkpoint: str, check: bool = True, model_name: str | None = None) -> WeightsInfo:
    """The facts of a checkpoint (a file, weight folder or hub reference) and, with ``check``,
    whether its weights fit the model it names (``model_name`` when it names none)."""
    stored = loading.read_checkpoint(checkpoint)
    saved = stored.saved
    located = stored.located
    name = model_name or stored.model_name
    weights = list(saved.weights.values())
    facts = {
        "checkpoint": stored.path,
        **({"local path": str(located.path)} if located and str(located.path) != stored.path else {}),
        **{key: str(value) for key, value in stored.source.items() if key in ("revision",)},
        "layout": loading.LAYOUTS[stored.layout],
        "model": name or "not recorded (name it with --model)",
        "options": ", ".join(f"{k}={v}" for k, v in sorted(stored.model_options.items())) or "-",
        "weights": weights_summary(weights),
    }
    clip = _clip_fact(stored, name or "")
    if clip:
        facts["frozen CLIP"] = clip
    facts["epoch"] = "not recorded" if saved.epoch is None else str(saved.epoch)
    facts["selected on"] = saved.selected_on or "not recorded"
    if saved.val_threshold is not None:
        facts["threshold"] = f"{saved.val_threshold:g} (val_threshold, chosen on held-out validation)"
    facts["image size"] = (
        f"{saved.image_size} ({'padded' if saved.padding else 'resized'})" if saved.image_size else "not recorded"
    )
    if saved.precision:
        facts["precision"] = saved.precision
    for label, value in (("optimizer", saved.optimizer), ("scaler", saved.scaler)):
        count, size = tensor_bytes(value)
        if value is not None:
            facts[label] = f"{count} tensors, {size_text(size)}" if count else f"{len(value)} entries, no tensors"
        else:
            facts[label] = "none"
    facts["sha256"] = checkpoint_sha256(stored)
    fits = None
    if check and name:
        shapes, state = loading.expected_shapes(stored, name, {**stored.model_options})
        fits = loading.mismatches(shapes, state)
    return WeightsInfo(facts, fits)


def weights_file(stored: loading.Checkpoint) -> Path:
    """The file holding a checkpoint's weights here: the file itself, or a weight folder's
    ``model.safetensors``."""
    return _weights_in(stored.located.path if stored.located else Path(stored.path))


def checkpoint_sha256(stored: loading.Checkpoint) -> str:
    """The sha256 of a checkpoint's weights: the hub's (its LFS etag) when recorded, else
    computed from the file here."""
    return stored.source.get("sha256") or sha256_file(weights_file(stored))


def _weights_in(path: Path) -> Path:
    return path / folder.WEIGHTS if path.is_dir() else path


def with_sha256(source: Mapping[str, Any]) -> dict[str, Any]:
    """``source`` (``Checkpoint.source``, as a ``Predictor`` keeps it) with the sha256 of its
    weights: the hub's when recorded, else computed from the local file (a weight folder's
    ``model.safetensors``); as it is when it names no local checkpoint. Identifies the weights
    when the path alone does not (a file overwritten by a later run)."""
    record = dict(source)
    given = record.get("checkpoint")
    if given and not record.get("sha256") and not hub.is_reference(given):
        path = _weights_in(Path(given).expanduser())
        if path.is_file():
            record["sha256"] = sha256_file(path)
    return record
