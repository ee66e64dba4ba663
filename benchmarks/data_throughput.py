"""Training-sample throughput of OpenSDIDataset against the paper's data path, and its memory.

The paper's path: the shards read through ``datasets`` (the ``Image()`` feature decodes each row)
into a Benco ``AbstractDataset`` subclass that uses Benco's own ``__getitem__`` (float64 mask
binarization, conv2d edge mask at full resolution). Both run the paper's training setting: resize
to 512, edge width 7, the paper's augmentations, one process, no DataLoader workers. The two
alternate in blocks of samples with the same seeds, over the same shards of 1024/768/640/512-px
JPEGs; rows are visited in order and in a shuffled order.

Memory: a fresh process builds an OpenSDIDataset over a 200,824-row index (70 shards of tiny
images in the real format and row groups of 100 rows, like the training split), then runs the
training loop on the real-size shards; it reports its peak RSS (VmHWM) and the index's own size.

    PYTHONPATH=. python benchmarks/data_throughput.py [--rounds 6] [--block 12]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SIZES = {"sd15": 1024, "sd2": 768, "sdxl": 640, "sd3": 512}
TRAIN_ROWS = 200_824
TRAIN_SHARDS = 70


def paper_augmentations():
    """OpenSDI's training augmentations in albumentations 1.3.0."""
    import albumentations as albu

    return albu.Compose(
        [
            albu.RandomScale(scale_limit=0.2, p=1),
            albu.HorizontalFlip(p=0.5),
            albu.VerticalFlip(p=0.5),
            albu.RandomBrightnessContrast(brightness_limit=(-0.1, 0.1), contrast_limit=0.1, p=1),
            albu.ImageCompression(quality_lower=70, quality_upper=100, p=0.2),
            albu.RandomRotate90(p=0.5),
            albu.GaussianBlur(blur_limit=(3, 7), p=0.2),
        ]
    )


def write_real_size_shards(root: Path, per_class: int) -> list[str]:
    from dataset_adapters import write_synthetic_opensdi

    files = []
    for generator, size in SIZES.items():
        files += write_synthetic_opensdi(root, generators=(generator,), n_per_class=per_class, image_size=size,
                                         seed=1, rows_per_group=8)
    return files


def paper_dataset(files: list[str], cache: Path, **kwargs):
    """Benco's own ``__getitem__`` over rows that ``datasets`` decodes with its ``Image()`` feature."""
    import datasets
    from IMDLBenCo.datasets.abstract_dataset import AbstractDataset

    class HubImageDataset(AbstractDataset):
        def _init_dataset_path(self, path):
            self.rows = datasets.load_dataset("parquet", data_files=path, split="train", cache_dir=str(cache))
            keys = self.rows["key"]
            return keys, keys

        def _get_image(self, index):
            row = self.rows[index]
            image = np.array(row["image"].convert("RGB"))
            height, width = image.shape[:2]
            if row["label"] == 0:
                mask = np.zeros((height, width, 3))
            elif row["mask"] is None:
                mask = np.full((height, width, 3), 255, dtype=np.uint8)
            else:
                mask = np.array(row["mask"].convert("RGB"))
            return image, mask, int(row["label"]), (width, height), (width, height), row["key"], row["key"]

    return HubImageDataset(files, **kwargs)


def throughput(files: list[str], workdir: Path, rounds: int, block: int) -> None:
    from dataset_adapters import OpenSDIDataset

    kwargs = dict(is_resizing=True, output_size=(512, 512), edge_width=7, common_transforms=paper_augmentations())
    ours = OpenSDIDataset(files, **kwargs)
    paper = paper_dataset(files, workdir / "hf-cache", **kwargs)
    assert len(ours) == len(paper)
    rng = np.random.default_rng(0)
    for order in ("in order", "shuffled"):
        spent = {"OpenSDIDataset": 0.0, "datasets + Benco": 0.0}
        count = 0
        position = 0
        for round_number in range(rounds):
            if order == "in order":
                indices = [(position + k) % len(ours) for k in range(block)]
                position += block
            else:
                indices = rng.permutation(len(ours))[:block].tolist()
            contenders = [("OpenSDIDataset", ours), ("datasets + Benco", paper)]
            if round_number % 2:
                contenders.reverse()
            for name, dataset in contenders:
                random.seed(round_number)
                np.random.seed(round_number)
                start = time.perf_counter()
                for index in indices:
                    dataset[index]
                spent[name] += time.perf_counter() - start
            count += len(indices)
        ours_rate = count / spent["OpenSDIDataset"]
        paper_rate = count / spent["datasets + Benco"]
        print(f"{order:>9}: OpenSDIDataset {ours_rate:6.2f} samples/s, datasets + Benco {paper_rate:6.2f} samples/s, "
              f"ratio {ours_rate / paper_rate:.2f}x ({count} samples each, {rounds} alternating blocks)")


def write_train_sized_index(root: Path) -> None:
    """70 shards, 200,824 rows, keys and labels like the training split, 8x8 images, 100-row groups."""
    from PIL import Image

    from dataset_adapters import write_opensdi_shard

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, "PNG")
    tiny = buffer.getvalue()
    per_shard = -(-TRAIN_ROWS // TRAIN_SHARDS)
    for shard in range(TRAIN_SHARDS):
        rows = []
        for i in range(shard * per_shard, min(TRAIN_ROWS, (shard + 1) * per_shard)):
            kind = "partial" if i % 2 else "entire"
            label = (i // 2) % 2
            rows.append((f"{kind}/sd15/{'fake' if label else 'real'}/{i}.jpg", tiny,
                         tiny if kind == "partial" and label else None, label))
        write_opensdi_shard(root / "data" / f"sd15-{shard:05d}-of-{TRAIN_SHARDS:05d}.parquet", rows, rows_per_group=100)


def _memory_mb() -> dict[str, float]:
    """Peak RSS (VmHWM), RSS, and its anonymous and file-backed (shared library) parts, in MB."""
    fields = {}
    with open("/proc/self/status") as status:
        for line in status:
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                fields[name] = int(value.split()[0]) / 1024
    return fields


def row_group_read_ms() -> float:
    """Time to read the image column of one row group as the real shards have them: 100 rows of 172 KB
    (34.6 GB / 200,824 rows), what each shuffled access costs the adapter beyond decoding."""
    import pyarrow.parquet as pq

    from dataset_adapters import write_opensdi_shard

    rng = np.random.default_rng(0)
    rows = [(f"partial/sd15/real/{i}.jpg", rng.bytes(172_000), None, 0) for i in range(300)]
    with tempfile.TemporaryDirectory() as tmp:
        path = write_opensdi_shard(Path(tmp) / "sd15-00000-of-00001.parquet", rows, rows_per_group=100)
        with pq.ParquetFile(path) as parquet:
            start = time.perf_counter()
            for k in range(30):
                parquet.read_row_group(k % 3, columns=["image.bytes"])
            return (time.perf_counter() - start) / 30 * 1000


def memory_child(index_root: str, files: list[str], samples: int) -> None:
    """Run in a fresh process: memory with the 200k-row index, before and after the training loop."""
    from dataset_adapters import OpenSDIDataset

    imported = _memory_mb()
    start = time.perf_counter()
    big = OpenSDIDataset(index_root, is_resizing=True, output_size=(512, 512), edge_width=7,
                         common_transforms=paper_augmentations())
    built = time.perf_counter() - start
    index = big._index
    index_mb = (index.shard.nbytes + index.row.nbytes + index.label.nbytes + index.has_mask.nbytes
                + index.keys.nbytes) / 2**20
    with_index = _memory_mb()
    for i in np.random.default_rng(0).permutation(len(big))[:200]:
        big[int(i)]
    train = OpenSDIDataset(files, is_resizing=True, output_size=(512, 512), edge_width=7,
                           common_transforms=paper_augmentations())
    for k in range(samples):
        train[k % len(train)]
    final = _memory_mb()
    print(f"index of {len(big):,} rows built in {built:.1f} s; its arrays take {index_mb:.1f} MB")
    print(f"after importing torch + IMDLBenCo: RSS {imported['VmRSS']:.0f} MB "
          f"({imported['RssFile']:.0f} MB of it shared library pages, {imported['RssAnon']:.0f} MB private)")
    print(f"with the index: RSS {with_index['VmRSS']:.0f} MB (+{with_index['VmRSS'] - imported['VmRSS']:.0f} MB), "
          f"peak {with_index['VmHWM']:.0f} MB")
    print(f"after 200 index samples and {samples} training samples at 1024-512 px: RSS {final['VmRSS']:.0f} MB, "
          f"peak {final['VmHWM']:.0f} MB, private {final['RssAnon']:.0f} MB")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=6, help="alternating blocks per order")
    parser.add_argument("--block", type=int, default=12, help="samples per block")
    parser.add_argument("--per-class", type=int, default=4, help="rows per class per image size")
    parser.add_argument("--memory-child", nargs=2, metavar=("INDEX_ROOT", "SHARDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        memory_child(args.memory_child[0], args.memory_child[1].split(os.pathsep), 40)
        return 0

    print(f"machine: {platform.platform()}, {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="opensdi-bench-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        files = write_real_size_shards(workdir / "real-size", args.per_class)
        print(f"wrote {len(files)} shards of {', '.join(f'{s}px' for s in SIZES.values())} JPEGs "
              f"in {time.perf_counter() - start:.0f} s")
        throughput(files, workdir, args.rounds, args.block)
        print(f"reading one real-size row group (100 rows of 172 KB) takes {row_group_read_ms():.1f} ms: "
              f"the adapter's extra cost per shuffled sample on the published shards")

        start = time.perf_counter()
        write_train_sized_index(workdir / "train-index")
        print(f"wrote a {TRAIN_ROWS:,}-row index in {TRAIN_SHARDS} shards in {time.perf_counter() - start:.0f} s")
        command = [sys.executable, __file__, "--memory-child", str(workdir / "train-index"), os.pathsep.join(files)]
        subprocess.run(command, check=True, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
