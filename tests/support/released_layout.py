"""Files in the layout of the released MaskCLIP checkpoints (``nebula/MaskCLIP-weights``), and
the Hugging Face cache as ``hf_hub_download`` leaves them.

A released file is Benco's ``misc.save_model`` dict: ``model`` (the whole published
``MaskCLIP('ViTL')`` state dict, frozen CLIP included, fp32), ``optimizer`` (AdamW state for
every trainable tensor: ``step``, ``exp_avg``, ``exp_avg_sq``), ``scaler``, ``epoch`` and
``args`` (an ``argparse.Namespace``). ``write_released_file`` writes one with random weights for
a setting: ``paper`` gives the full 3.14 GB file, ``tiny`` a scaled-down one of the same layout.
``put_in_hub_cache`` lays files out as the cache holds them: ``models--OWNER--REPO/blobs/<etag>``
(the sha256 for LFS files), ``snapshots/<commit>/<path>`` relative links, ``refs/<revision>``.

``python -m tests.support.released_layout measure FILE [--before]`` loads FILE in this fresh
process and prints, as JSON, the peak RSS above the RSS before the call, what is held after it, the loaded model's own bytes, and the peak once one forward has run: through
``load_model``, or (``--before``) as loading worked before it held the model once (read the
whole file, build the network, copy the weights in).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

RELEASED_NAME = "MaskCLIP_sd15_20241109_08_53_19.pth"
REPO = "nebula/MaskCLIP-weights"
COMMIT = "765f09a3c2a1d0e4b6f8a9c7d5e3f1b2a4c6e8d0"


def released_state(setting: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A random state dict of a setting's whole network under the published names."""
    from imdlbenco_maskclip.model import SETTINGS
    from imdlbenco_maskclip.model.published import network_shapes, to_published

    generator = torch.Generator().manual_seed(seed)
    ours = {key: torch.randn(shape, generator=generator) * 0.02 for key, shape in network_shapes(setting).items()}
    return to_published(ours, SETTINGS[setting])


def adamw_state(trainable: dict[str, torch.Tensor], steps: int) -> dict:
    """AdamW's own ``state_dict`` after ``steps`` steps over ``trainable``: moments for each."""
    parameters = [torch.nn.Parameter(value, requires_grad=True) for value in trainable.values()]
    optimizer = torch.optim.AdamW(parameters, lr=1e-4, weight_decay=0.05)
    for parameter in parameters:
        optimizer.state[parameter] = {
            "step": torch.tensor(float(steps)),
            "exp_avg": torch.full_like(parameter, 1e-4, requires_grad=False),
            "exp_avg_sq": torch.full_like(parameter, 1e-8, requires_grad=False),
        }
    return optimizer.state_dict()


def write_released_file(
    path: Path, setting: str = "tiny", seed: int = 0, epoch: int = 13, image_size: int = 512
) -> Path:
    """A checkpoint in the released layout for ``setting`` (``paper``: full size, 3.14 GB)."""
    model = released_state(setting, seed)
    trainable = {key: value for key, value in model.items() if not key.startswith("clip.")}
    args = argparse.Namespace(
        model="MaskCLIP",
        data_path="/data/OpenSDI_train",
        image_size=image_size,
        if_resizing=True,
        if_padding=False,
        batch_size=16,
        epochs=50,
        lr=1e-4,
        weight_decay=0.05,
        output_dir="./output_dir",
        device="cuda",
    )
    scaler = {
        "scale": 65536.0,
        "growth_factor": 2.0,
        "backoff_factor": 0.5,
        "growth_interval": 2000,
        "_growth_tracker": 0,
    }
    payload = {
        "model": model,
        "optimizer": adamw_state(trainable, epoch * 100),
        "epoch": epoch,
        "scaler": scaler,
        "args": args,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(payload, path)
    return path


@contextmanager
def one_thread() -> Iterator[None]:
    """One intra-op CPU thread while comparing outputs bit for bit: with more, the order of a
    kernel's partial sums can follow the machine's load (see ``training.reproducibility``)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def put_in_hub_cache(
    cache: Path, repo: str, files: dict[str, Path], commit: str = COMMIT, revision: str = "main", link: bool = False
) -> Path:
    """Lay ``files`` (path in the repository -> local file) out in the Hugging Face cache
    ``cache`` as ``hf_hub_download`` leaves them; returns the snapshot folder. ``link`` makes
    each blob a hard link to its file instead of a copy (for multi-GB files)."""
    storage = cache / f"models--{repo.replace('/', '--')}"
    snapshot = storage / "snapshots" / commit
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    (storage / "refs").mkdir(parents=True, exist_ok=True)
    (storage / "refs" / revision).write_text(commit)
    for inside, local in files.items():
        etag = sha256_of(local)
        blob = storage / "blobs" / etag
        if blob.exists():
            pass
        elif link:
            os.link(local, blob)
        else:
            blob.write_bytes(local.read_bytes())
        link = snapshot / inside
        link.parent.mkdir(parents=True, exist_ok=True)
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


def offline_cache(monkeypatch: Any, cache: Path, repo: str, files: dict[str, Path]) -> Path:
    """``files`` put in the Hugging Face cache ``cache`` (``put_in_hub_cache``), which
    huggingface_hub then reads as under ``HF_HUB_CACHE=cache HF_HUB_OFFLINE=1``; returns ``cache``."""
    from huggingface_hub import constants

    put_in_hub_cache(cache, repo, files)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def forward(model: torch.nn.Module, seed: int = 0, size: int = 64) -> dict[str, torch.Tensor]:
    """The model's outputs for two random images (seeded), without gradient."""
    with torch.no_grad():
        return model(image=torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed)))


def same_outputs(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Whether two outputs hold bitwise equal masks and fake probabilities."""
    return all(torch.equal(a[key], b[key]) for key in ("pred_mask", "pred_label"))


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _reset_peak() -> None:
    """Start this process's peak RSS (``VmHWM``) afresh. ``ru_maxrss`` cannot serve: Linux
    carries the parent's RSS at fork across ``exec``, so a process started by a large one (a
    pytest run holding models) reports the parent's peak, not its own."""
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")


def _peak() -> int:
    """The peak RSS since ``_reset_peak``."""
    with open("/proc/self/status") as handle:
        line = next(line for line in handle if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def _load_as_before(path: Path) -> torch.nn.Module:
    """Loading as it was before the model was held once: the whole file read into memory
    (optimizer included), the network built with its own random weights, the weights copied."""
    from imdlbenco_maskclip.host.workarounds import allow_namespace_checkpoints
    from imdlbenco_maskclip.model import SETTINGS, MaskCLIP
    from imdlbenco_maskclip.model.published import from_published, published_setting

    allow_namespace_checkpoints()
    payload = torch.load(path, map_location="cpu", weights_only=True)
    setting = published_setting(payload["model"])
    model = MaskCLIP(setting)
    model.load_state_dict(from_published(payload["model"], SETTINGS[setting]), strict=True)
    return model.eval()


def measure(path: Path, before: bool) -> dict:
    """Peak RSS above the RSS before loading ``path``, what is held after, the loaded model's
    bytes, and the peak once a first forward (one 64 px image) has read every weight."""
    import IMDLBenCo.registry  # noqa: F401  (imports done before the measured call)
    import open_clip  # noqa: F401

    import imdlbenco_maskclip

    start = _rss()
    _reset_peak()
    model = _load_as_before(path) if before else imdlbenco_maskclip.load_model(path)
    peak = _peak()
    after = _rss()
    model_bytes = sum(t.nbytes for t in model.parameters()) + sum(t.nbytes for t in model.buffers())
    with torch.no_grad():
        model(image=torch.zeros(1, 3, 64, 64))
    with_forward = _peak()
    return {
        "peak_above_start": peak - start,
        "held_after": after - start,
        "model_bytes": model_bytes,
        "peak_with_forward": with_forward - start,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    measure_command = commands.add_parser("measure")
    measure_command.add_argument("file", type=Path)
    measure_command.add_argument("--before", action="store_true")
    write_command = commands.add_parser("write")
    write_command.add_argument("file", type=Path)
    write_command.add_argument("--setting", default="paper")
    args = parser.parse_args()
    if args.command == "write":
        write_released_file(args.file, args.setting)
    else:
        json.dump(measure(args.file, args.before), sys.stdout)


if __name__ == "__main__":
    main()
