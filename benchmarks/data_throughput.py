"""Training-sample throughput of OpenSDIDataset in three orders, against the published data path.

The shards are like the published ones: 100-row groups of about 1024-px JPEGs (about 53 MB per
group here; 17 MB on average in the published training split). Their rows repeat, under distinct
keys and in a shuffled order, 12 synthetic 1024-px rows (an entire and a partial real and fake,
three of each), so that writing them takes seconds. All runs use the paper's training setting:
resize to 512, edge width 7, the paper's augmentations. The page cache is warm.

Part 1, one process (one core): samples/s per core of

* ``in order``: OpenSDIDataset read front to back;
* ``global shuffle``: OpenSDIDataset in a random order (what ``--shuffle global`` gives);
* ``row-group shuffle``: OpenSDIDataset in ``RowGroupShuffleSampler``'s order;
* ``published, shuffled``: the published path, shards read through ``datasets`` (its ``Image()``
  feature decodes each row) into Benco's own ``AbstractDataset.__getitem__`` (float64 mask
  binarization, conv2d edge mask at full resolution), in a random order.

The four alternate in blocks with the same seeds; each OpenSDIDataset order covers one whole epoch,
the published path a tenth of one. Samples/s per core is samples per CPU-second of the process
(all its threads), which other load on the machine changes less than wall-clock samples/s.
Bytes read per sample: the stored size of the row-group columns the dataset read (parquet
metadata), over the samples; the published path reads its arrow cache, which ``datasets``
converts from the shards once, through a memory map.

Part 2, a fresh process per OpenSDIDataset order with a DataLoader of ``--workers`` worker
processes, batch 16, one whole epoch: per worker, the row groups and bytes it read per sample, the
peak of pyarrow's memory pool (where the row-group cache lives) and of its private memory
(RssAnon after each sample) above its start. The shards are memory-mapped: the page cache they
occupy is shared and counts in no worker's private memory. Row-group shuffle uses
``RowGroupBatchSampler``, so each worker reads its own row groups.

Part 3 (``--index-memory``): a fresh process builds an OpenSDIDataset over a 200,824-row index
(70 shards in the real format, 8-px images, 100-row groups, like the training split) and reports
its peak RSS and the index's own size.

    PYTHONPATH=. python benchmarks/data_throughput.py [--groups 8] [--window 4] [--workers 2]

The defaults (8 row groups, 420 MB of shards) take about 3.5 CPU-minutes: 4 to 6 minutes of wall
time on 2 cores that other jobs shared. ``--window`` is 4 so that the benchmark's groups outnumber the
window; training uses 16. Bytes and speed do not depend on the window; the row-group cache holds
at most ``window`` groups per process.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

IMAGE_SIZE = 1024
GROUP_ROWS = 100
GROUPS_PER_SHARD = 5
TRAIN_ROWS = 200_824
TRAIN_SHARDS = 70
ORDERS = ("in order", "global shuffle", "row-group shuffle")
PUBLISHED = "published, shuffled"


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


def training_kwargs(**extra) -> dict:
    return dict(
        is_resizing=True, output_size=(512, 512), edge_width=7, common_transforms=paper_augmentations(), **extra
    )


def write_real_size_shards(root: Path, groups: int) -> list[str]:
    """``groups`` row groups of 100 rows of 1024-px images, ``GROUPS_PER_SHARD`` groups per shard."""
    import pyarrow.parquet as pq

    from dataset_adapters import write_opensdi_shard, write_synthetic_opensdi

    pool = pq.read_table(
        write_synthetic_opensdi(root / "pool", generators=("sd15",), n_per_class=3, image_size=IMAGE_SIZE, seed=1)
    ).to_pylist()
    order = np.random.default_rng(0).permutation(groups * GROUP_ROWS)
    rows = []
    for number, pick in enumerate(order):
        row = pool[pick % len(pool)]
        key = row["key"].replace(".", f"-{number:06d}.", 1)
        rows.append((key, row["image"]["bytes"], row["mask"]["bytes"] if row["mask"] else None, row["label"]))
    shards = -(-groups // GROUPS_PER_SHARD)
    per_shard = GROUPS_PER_SHARD * GROUP_ROWS
    return [
        write_opensdi_shard(
            root / "data" / f"sd15-{s:05d}-of-{shards:05d}.parquet",
            rows[s * per_shard : (s + 1) * per_shard],
            rows_per_group=GROUP_ROWS,
        )
        for s in range(shards)
    ]


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


def memory_kb(field: str) -> int:
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) for line in handle if line.startswith(f"{field}:"))


def epoch_order(name: str, dataset, window: int) -> list[int]:
    from dataset_adapters import RowGroupShuffleSampler

    if name == "in order":
        return list(range(len(dataset)))
    if name == "global shuffle":
        return np.random.default_rng(1).permutation(len(dataset)).tolist()
    return list(RowGroupShuffleSampler(dataset, seed=1, window=window))


def one_core(files: list[str], workdir: Path, window: int, blocks: int) -> dict[str, dict[str, float]]:
    """Part 1: samples/s and bytes read per sample of the four contenders, alternating blocks."""
    from dataset_adapters import OpenSDIDataset

    OpenSDIDataset(files, **training_kwargs())[0]  # warm up imports and code paths outside the timing
    contenders = {}
    for name in ORDERS:
        dataset = OpenSDIDataset(files, **training_kwargs())
        contenders[name] = (dataset, epoch_order(name, dataset, window))
    published = paper_dataset(files, workdir / "hf-cache", **training_kwargs())
    published[0]
    tenth = len(published) // 10
    contenders[PUBLISHED] = (published, np.random.default_rng(2).permutation(len(published))[:tenth].tolist())

    spent = dict.fromkeys(contenders, 0.0)
    cpu = dict.fromkeys(contenders, 0.0)
    names = list(contenders)
    for block in range(blocks):
        for name in names[block % 4 :] + names[: block % 4]:
            dataset, order = contenders[name]
            share = order[block * len(order) // blocks : (block + 1) * len(order) // blocks]
            random.seed(block)
            np.random.seed(block)
            start, start_cpu = time.perf_counter(), time.process_time()
            for index in share:
                dataset[index]
            spent[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
    results = {}
    for name, (dataset, order) in contenders.items():
        results[name] = {"samples": len(order), "rate": len(order) / spent[name], "per_core": len(order) / cpu[name]}
        if name in ORDERS:
            results[name].update(groups=dataset._reader.groups_read, bytes=dataset._reader.bytes_read / len(order))
    return results


class WorkerProbe:
    """A Benco post-function that stamps each sample with its worker's reading and memory so far.
    (It holds its dataset: forked into a worker, that is the worker's copy.)"""

    def __init__(self) -> None:
        self.dataset = None
        self.start: dict[str, int] | None = None

    def __call__(self, data: dict) -> None:
        import pyarrow as pa
        from torch.utils.data import get_worker_info

        data["probe"] = json.dumps(
            {
                "worker": get_worker_info().id,
                "read": self.dataset._reader.bytes_read,
                "private_kb": memory_kb("RssAnon") - self.start["private_kb"],
                "arrow_peak": pa.default_memory_pool().max_memory() - self.start["arrow_peak"],
                "groups": self.dataset._reader.groups_read,
            }
        )


def worker_child(files: list[str], order: str, window: int, workers: int) -> None:
    """Part 2, in a fresh process: one epoch through a DataLoader with ``workers`` workers."""
    from torch.utils.data import DataLoader, RandomSampler, SequentialSampler

    from dataset_adapters import OpenSDIDataset, RowGroupBatchSampler, RowGroupShuffleSampler

    probe = WorkerProbe()
    dataset = OpenSDIDataset(files, **training_kwargs(post_funcs=[probe]))
    probe.dataset = dataset

    def mark_start(worker_id: int) -> None:
        import pyarrow as pa

        probe.start = {"private_kb": memory_kb("RssAnon"), "arrow_peak": pa.default_memory_pool().bytes_allocated()}
        random.seed(worker_id)
        np.random.seed(worker_id)

    common = dict(num_workers=workers, worker_init_fn=mark_start, multiprocessing_context="fork")
    if order == "row-group shuffle":
        sampler = RowGroupShuffleSampler(dataset, seed=1, window=window)
        loader = DataLoader(
            dataset, batch_sampler=RowGroupBatchSampler(sampler, 16, workers, drop_last=False), **common
        )
    else:
        chosen = SequentialSampler(dataset) if order == "in order" else RandomSampler(dataset)
        loader = DataLoader(dataset, sampler=chosen, batch_size=16, **common)
    last: dict[int, dict] = {}
    served: dict[int, int] = {}
    start = time.perf_counter()
    for batch in loader:
        for stamp in batch["probe"]:
            stamp = json.loads(stamp)
            worker = stamp["worker"]
            served[worker] = served.get(worker, 0) + 1
            last[worker] = {k: max(v, last.get(worker, {}).get(k, 0)) for k, v in stamp.items()}
    elapsed = time.perf_counter() - start
    print(json.dumps({"rate": len(dataset) / elapsed, "workers": {w: {**last[w], "samples": served[w]} for w in last}}))


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
            rows.append(
                (
                    f"{kind}/sd15/{'fake' if label else 'real'}/{i}.jpg",
                    tiny,
                    tiny if kind == "partial" and label else None,
                    label,
                )
            )
        write_opensdi_shard(root / "data" / f"sd15-{shard:05d}-of-{TRAIN_SHARDS:05d}.parquet", rows, rows_per_group=100)


def index_child(index_root: str) -> None:
    """Part 3, in a fresh process: memory with the 200k-row index."""
    from dataset_adapters import OpenSDIDataset

    imported = memory_kb("VmRSS") / 1024
    start = time.perf_counter()
    big = OpenSDIDataset(index_root, **training_kwargs())
    built = time.perf_counter() - start
    index = big._index
    index_mb = (
        index.shard.nbytes + index.row.nbytes + index.label.nbytes + index.has_mask.nbytes + index.keys.nbytes
    ) / 2**20
    with_index = memory_kb("VmRSS") / 1024
    print(
        f"index of {len(big):,} rows built in {built:.1f} s; its arrays take {index_mb:.1f} MB; RSS "
        f"{imported:.0f} MB after imports, {with_index:.0f} MB with the index, peak {memory_kb('VmHWM') / 1024:.0f} MB"
    )


def report_one_core(results: dict[str, dict[str, float]]) -> None:
    print("\npart 1: one process (samples per CPU-second = samples/s per core; wall-clock samples/s; bytes read)")
    for name, r in results.items():
        read = f"{r['bytes'] / 2**20:6.2f} MB read/sample" if name in ORDERS else "(reads a memory map)"
        groups = f", {r['groups']} row-group column reads" if "groups" in r else ""
        print(
            f"  {name:>19}: {r['per_core']:6.2f} samples/s per core, {r['rate']:6.2f} samples/s wall, {read} "
            f"({r['samples']} samples{groups})"
        )
    rowgroup, in_order = results["row-group shuffle"], results["in order"]
    print(
        f"  row-group shuffle / in order: {rowgroup['per_core'] / in_order['per_core']:.2f}x samples/s per core "
        f"(target >= 0.9x), {rowgroup['bytes'] / in_order['bytes']:.2f}x bytes read per sample (target <= 1.2x)"
    )
    print(
        f"  row-group shuffle / global shuffle: {rowgroup['per_core'] / results['global shuffle']['per_core']:.2f}x "
        f"samples/s per core, {results['global shuffle']['bytes'] / rowgroup['bytes']:.0f}x fewer bytes read per sample"
    )
    print(
        f"  row-group shuffle / published, shuffled: {rowgroup['per_core'] / results[PUBLISHED]['per_core']:.2f}x "
        f"samples/s per core (target >= 4x)"
    )


def report_workers(order: str, result: dict, group_mb: float) -> None:
    print(f"  {order:>17}: {result['rate']:6.2f} samples/s in all")
    for worker, w in sorted(result["workers"].items(), key=lambda item: int(item[0])):
        print(
            f"    worker {worker}: {w['samples']} samples, {w['groups']} row-group column reads, "
            f"{w['read'] / w['samples'] / 2**20:5.2f} MB read/sample, private memory peak +{w['private_kb'] / 1024:.0f} MB, "
            f"pyarrow pool peak {w['arrow_peak'] / 2**20:.0f} MB ({w['arrow_peak'] / 2**20 / group_mb:.1f} row groups)"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--groups", type=int, default=8, help="row groups of 100 real-size rows")
    parser.add_argument("--window", type=int, default=4, help="RowGroupShuffleSampler's window, in row groups")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers in part 2 (0: skip part 2)")
    parser.add_argument("--blocks", type=int, default=10, help="alternating blocks in part 1")
    parser.add_argument("--index-memory", action="store_true", help="also run part 3")
    parser.add_argument("--worker-child", nargs=2, metavar=("ORDER", "SHARDS"), help=argparse.SUPPRESS)
    parser.add_argument("--index-child", metavar="INDEX_ROOT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker_child:
        worker_child(args.worker_child[1].split(os.pathsep), args.worker_child[0], args.window, args.workers)
        return 0
    if args.index_child:
        index_child(args.index_child)
        return 0

    cpu = platform.processor() or platform.machine()
    with open("/proc/cpuinfo") as handle:
        cpu = next((line.split(":", 1)[1].strip() for line in handle if line.startswith("model name")), cpu)
    print(f"machine: {platform.platform()}, {cpu}, {os.cpu_count()} CPUs, Python {platform.python_version()}")
    with tempfile.TemporaryDirectory(prefix="opensdi-bench-") as tmp:
        workdir = Path(tmp)
        start = time.perf_counter()
        files = write_real_size_shards(workdir / "real-size", args.groups)
        group_mb = sum(os.path.getsize(f) for f in files) / args.groups / 2**20
        print(
            f"wrote {args.groups} row groups of {GROUP_ROWS} {IMAGE_SIZE}-px rows in {len(files)} shards, "
            f"{group_mb:.0f} MB per group, in {time.perf_counter() - start:.0f} s; window {args.window} row groups"
        )
        report_one_core(one_core(files, workdir, args.window, args.blocks))

        if args.workers:
            print(f"\npart 2: DataLoader with {args.workers} workers, batch 16, one epoch, a fresh process per order")
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            for order in ORDERS:
                command = [
                    sys.executable,
                    __file__,
                    "--worker-child",
                    order,
                    os.pathsep.join(files),
                    "--window",
                    str(args.window),
                    "--workers",
                    str(args.workers),
                ]
                out = subprocess.run(command, check=True, env=env, capture_output=True, text=True).stdout
                report_workers(order, json.loads(out.strip().splitlines()[-1]), group_mb)

        if args.index_memory:
            start = time.perf_counter()
            write_train_sized_index(workdir / "train-index")
            print(
                f"\npart 3: wrote a {TRAIN_ROWS:,}-row index in {TRAIN_SHARDS} shards in {time.perf_counter() - start:.0f} s"
            )
            env = {**os.environ, "PYTHONWARNINGS": "ignore"}
            subprocess.run(
                [sys.executable, __file__, "--index-child", str(workdir / "train-index")], check=True, env=env
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
