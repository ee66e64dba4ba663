"""Images/s of ``benco predict``'s stages and of the command end to end, in one run.

For the tiny setting at 256 px and the paper setting at 512 px (random weights, nothing
downloaded), on the same 1024-px JPEGs:

* ``decoding alone``: reading, decoding (Pillow, EXIF orientation, RGB) and resizing with Benco's
  test transform, as ``benco predict``'s DataLoader workers do, in a DataLoader of ``--workers``
  workers with no model;
* ``model alone``: the forward on those decoded tensors, in batches of ``--batch``, at the
  precision ``--amp auto`` chooses here (a warm-up batch first, untimed);
* ``masks alone``: what follows the forward for the parquet format, a probability map resized
  to 1024 px and encoded as PNG, in ``benco predict``'s writer threads;
* ``benco predict`` end to end, a fresh process each: a folder of the JPEGs to the files format
  (a PNG mask and overlay per image), the same folder to ``--format parquet``, a parquet shard
  holding the same JPEG bytes to ``--format parquet``, and the folder to parquet again with
  ``GOMP_SPINCOUNT=300000``: OpenMP threads that spin while they wait, GNU OpenMP's default,
  where ``benco predict`` (and this benchmark, for every stage) makes them sleep. The rate is the
  one the command prints: its prediction loop, DataLoader start and first batch included,
  start-up and model loading not.

End to end at the rate of the slower of decoding and model means that reading is hidden behind
the model. On a CPU it cannot be: the DataLoader workers, the writer threads and the model share
the cores. On a GPU machine the same run shows whether I/O is hidden.

Each measure is the best of ``--rounds`` rounds, taken in turn, so that load from other jobs on
a shared machine lowers the figures less.

    PYTHONPATH=. python benchmarks/predict_throughput.py [--settings tiny paper] [--workers 2] [--rounds 2]

The defaults take 15-25 minutes on 2 busy cores; the paper setting's checkpoint is a 2.2 GB file
in a temporary folder.
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from imdlbenco_maskclip.cli.predict import wait_passively  # noqa: E402  (light: imports no torch)

SIZES = {"tiny": 256, "paper": 512}
PHOTO_SIDE = 1024


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return f"{platform.node()}: {cpu}, {os.cpu_count()} CPUs{gpu}, torch {torch.__version__}"


def write_photos(folder: Path, count: int) -> list[Path]:
    """``count`` 1024-px JPEGs (quality 95): photo-like synthetic scenes, real and edited, repeated."""
    import pyarrow.parquet as pq
    from PIL import Image

    from dataset_adapters import write_synthetic_opensdi

    pool = pq.read_table(
        write_synthetic_opensdi(folder / "pool", generators=("sd15",), n_per_class=2, image_size=PHOTO_SIDE, seed=5)
    ).column("image")
    jpegs = []
    for cell in pool.to_pylist():
        picture = Image.open(io.BytesIO(cell["bytes"])).convert("RGB").resize((PHOTO_SIDE, PHOTO_SIDE))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=95)
        jpegs.append(buffer.getvalue())
    photos = folder / "photos"
    photos.mkdir()
    paths = []
    for i in range(count):
        path = photos / f"photo{i:04d}.jpg"
        path.write_bytes(jpegs[i % len(jpegs)])
        paths.append(path)
    return paths


def write_shard(paths: list[Path], folder: Path) -> Path:
    """The JPEGs' bytes as one OpenSDI-format shard (row groups of 100, as published)."""
    from dataset_adapters import write_opensdi_shard

    rows = [(f"photos/{p.name}", p.read_bytes(), None, 0) for p in paths]
    return Path(write_opensdi_shard(folder / "shards" / "bench-00000-of-00001.parquet", rows, rows_per_group=100))


def write_checkpoint(setting: str, size: int, path: Path) -> None:
    """Random weights of ``setting`` as ``benco train`` saves a run at ``size`` px (frozen CLIP
    included, so that nothing is fetched when it loads)."""
    import argparse as arguments

    import torch

    from imdlbenco_maskclip.checkpoints.layout import save_atomic
    from imdlbenco_maskclip.model import MaskCLIP

    torch.manual_seed(0)
    model = MaskCLIP(setting)
    run = arguments.Namespace(image_size=size, if_padding=False, model="MaskCLIP")
    save_atomic(
        {"model": model.state_dict(), "model_name": "MaskCLIP", "model_args": {"setting": setting}, "args": run}, path
    )


class Decoded:
    """What a ``benco predict`` worker does per image: read, decode, resize, normalize."""

    def __init__(self, paths: list[Path], size: int) -> None:
        from IMDLBenCo.transforms import get_albu_transforms

        self.paths = paths
        self.transform = get_albu_transforms("resize", output_size=(size, size))

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        import numpy as np

        from imdlbenco_maskclip.inference.photos import open_photo

        image = open_photo(self.paths[index])
        return self.transform(image=np.asarray(image))["image"], image


def decoding_alone(paths: list[Path], size: int, workers: int, batch: int) -> float:
    from torch.utils.data import DataLoader

    loader = DataLoader(Decoded(paths, size), batch_size=batch, num_workers=workers, collate_fn=list)
    start = time.perf_counter()
    count = sum(len(items) for items in loader)
    return count / (time.perf_counter() - start)


class ModelAlone:
    """The checkpoint's model on decoded tensors, at the precision ``--amp auto`` chooses here."""

    def __init__(self, checkpoint: Path, paths: list[Path], size: int, batch: int) -> None:
        import torch

        from imdlbenco_maskclip import load_model
        from imdlbenco_maskclip.common.precision import INFERENCE, autocast_dtype, precision_name

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = load_model(checkpoint, self.device)
        self.dtype = autocast_dtype("auto", self.device, INFERENCE)
        self.precision = precision_name(self.dtype)
        self.size = size
        decoded = Decoded(paths, size)
        tensors = [decoded[i][0] for i in range(len(paths))]
        self.batches = [torch.stack(tensors[i : i + batch]).to(self.device) for i in range(0, len(tensors), batch)]
        self.count = len(tensors)
        self.forward(self.batches[0])  # warm-up

    def forward(self, images) -> None:
        import contextlib

        import torch

        from imdlbenco_maskclip.inference.forward import forward, image_batch

        autocast = contextlib.nullcontext() if self.dtype is None else torch.autocast(self.device.type, self.dtype)
        with autocast:
            shown = [(self.size, self.size)] * len(images)
            forward(self.model, image_batch(images, shown, ["x"] * len(images), False))
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def rate(self) -> float:
        start = time.perf_counter()
        for images in self.batches:
            self.forward(images)
        return self.count / (time.perf_counter() - start)


def masks_alone(size: int, count: int) -> float:
    """Images/s of what follows the forward for the parquet format: a probability map resized from
    ``size`` to the photo's 1024 px and encoded as PNG, in ``benco predict``'s writer threads."""
    import torch
    import torch.nn.functional as F

    from imdlbenco_maskclip.inference.batch import WRITER_THREADS, in_threads, mask_png
    from imdlbenco_maskclip.inference.predictor import Prediction

    smooth = F.interpolate(torch.rand(1, 1, size // 16, size // 16, generator=torch.Generator().manual_seed(0)), size)

    def one(_: int) -> bytes:
        full = F.interpolate(smooth, size=(PHOTO_SIDE, PHOTO_SIDE), mode="bilinear").clamp(0, 1)[0, 0].numpy()
        return mask_png(Prediction("map", None, full, None))

    start = time.perf_counter()
    for _ in in_threads(one, range(count), WRITER_THREADS, 16):
        pass
    return count / (time.perf_counter() - start)


def end_to_end(
    checkpoint: Path, inputs: Path, output: Path, workers: int, batch: int, *flags: str, **environment: str
) -> float:
    """Images/s that ``benco predict`` prints (its prediction loop, DataLoader start included)."""
    import shutil

    shutil.rmtree(output, ignore_errors=True)
    command = [sys.executable, "-m", "imdlbenco_maskclip", "predict", "--checkpoint", str(checkpoint), str(inputs)]
    command += ["--batch_size", str(batch), "--num_workers", str(workers), "--output_dir", str(output), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONWARNINGS": "ignore", **environment}
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"benco predict failed:\n{done.stderr[-3000:]}")
    return float(re.search(r"([\d.,]+) images/s", done.stdout)[1].replace(",", ""))


def measure(setting: str, photos: list[Path], work: Path, args: argparse.Namespace) -> None:
    """Every stage of ``setting`` on its share of the photos (decoding alone on all of them, so
    that the workers' start weighs as little as in a long run)."""
    size = SIZES[setting]
    paths = photos[: dict(zip(SIZES, args.images))[setting]]
    checkpoint = work / f"{setting}.pth"
    write_checkpoint(setting, size, checkpoint)
    folder = work / f"photos-{setting}"
    folder.mkdir()
    for path in paths:
        os.link(path, folder / path.name)
    shard = write_shard(paths, work / setting)
    model = ModelAlone(checkpoint, paths, size, args.batch)
    stages = {
        "decoding alone": lambda: decoding_alone(photos, size, args.workers, args.batch),
        "model alone (decoded tensors)": model.rate,
        "masks alone (resize, PNG)": lambda: masks_alone(size, len(paths)),
        "benco predict, folder -> files": lambda: end_to_end(
            checkpoint, folder, work / "out", args.workers, args.batch
        ),
        "benco predict, folder -> parquet": lambda: end_to_end(
            checkpoint, folder, work / "out", args.workers, args.batch, "--format", "parquet"
        ),
        "benco predict, shard -> parquet": lambda: end_to_end(
            checkpoint, shard, work / "out", args.workers, args.batch, "--format", "parquet"
        ),
        "benco predict, same, OpenMP spinning": lambda: end_to_end(
            checkpoint, folder, work / "out", args.workers, args.batch, "--format", "parquet", GOMP_SPINCOUNT="300000"
        ),
    }
    best = dict.fromkeys(stages, 0.0)
    for _ in range(args.rounds):
        for name, run in stages.items():
            best[name] = max(best[name], run())
    checkpoint.unlink()
    bound = min(best["decoding alone"], best["model alone (decoded tensors)"])
    print(
        f"\n{setting} setting at {size} px, {model.precision}, {len(paths)} {PHOTO_SIDE}-px JPEGs "
        f"(decoding alone: {len(photos)}), "
        f"batch {args.batch}, {args.workers} workers; best of {args.rounds} rounds:"
    )
    for name, rate in best.items():
        ratio = f"  ({rate / bound:.2f} of the slower of decoding and model)" if name.startswith("benco") else ""
        print(f"  {name:34s} {rate:9.3f} images/s{ratio}")


def main() -> int:
    wait_passively()  # as benco predict does, before torch is imported
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=list(SIZES), choices=list(SIZES))
    parser.add_argument(
        "--images", type=int, nargs=2, default=(256, 16), metavar=("TINY", "PAPER"), help="photos per setting"
    )
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers (decoding alone, benco predict)")
    parser.add_argument("--batch", type=int, default=8, help="images per forward")
    parser.add_argument("--rounds", type=int, default=2, help="each measure is the best of this many, in turn")
    args = parser.parse_args()

    import torch

    from imdlbenco_maskclip.host.registration import quiet_benco_import

    quiet_benco_import()
    print(f"machine: {machine()}")
    if not torch.cuda.is_available():
        print(f"on the CPU: the {args.workers} DataLoader workers and the model share the {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="predict-bench-") as tmp:
        work = Path(tmp)
        photos = write_photos(work, max(args.images))
        for setting in args.settings:
            measure(setting, photos, work, args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
