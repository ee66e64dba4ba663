"""``RowGroupShuffleSampler``: every row once per epoch on every world size, a replayable order,
batches as mixed as global shuffling gives, each row group read once per process, workers that
keep their own row groups, and ``benco train`` using it for OpenSDI shards."""

from __future__ import annotations

import io
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, RandomSampler, get_worker_info

from dataset_adapters import OpenSDIDataset, RowGroupBatchSampler, RowGroupShuffleSampler, write_opensdi_shard
from dataset_adapters.errors import OpenSDIError

GENERATORS = ("sd15", "sd2", "sdxl", "sd3", "flux")


def _dataset(root, **kwargs) -> OpenSDIDataset:
    return OpenSDIDataset(root, is_resizing=True, output_size=(32, 32), **kwargs)


@pytest.fixture(scope="module")
def sorted_shards(tmp_path_factory):
    """5 generators x 2 shards x 400 rows in 100-row groups, rows sorted by key as a dataset built
    from folder listings is: every row group holds one generator and one label, the hardest case
    for mixing. The images are 8x8 (only the order is under test)."""
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 120, 150)).save(buffer, "PNG")
    tiny = buffer.getvalue()
    root = tmp_path_factory.mktemp("sorted")
    for generator in GENERATORS:
        rows = []
        for i in range(800):
            kind, label = ("entire", "partial")[(i // 2) % 2], i % 2
            key = f"{kind}/{generator}/{'fake' if label else 'real'}/{i:05d}.jpg"
            rows.append((key, tiny, tiny if kind == "partial" and label else None, label))
        rows.sort()
        for shard in range(2):
            write_opensdi_shard(
                root / "data" / f"{generator}-{shard:05d}-of-00002.parquet",
                rows[shard * 400 : (shard + 1) * 400],
                rows_per_group=100,
            )
    return root


@pytest.mark.parametrize("world_size", [1, 2, 3])
@pytest.mark.parametrize("drop_last", [False, True])
def test_every_index_once_per_epoch(opensdi_root, world_size, drop_last):
    dataset = _dataset(opensdi_root)
    size = len(dataset)  # 100 rows in groups of 5 and 2
    for epoch in (0, 1):
        for batch_size, workers in ((1, 1), (4, 2), (3, 3)):
            shares = []
            for rank in range(world_size):
                sampler = RowGroupShuffleSampler(
                    dataset, seed=5, window=3, rank=rank, world_size=world_size, drop_last=drop_last
                )
                sampler.set_epoch(epoch)
                shares.append(sampler.order(batch_size, workers).tolist())
                if (batch_size, workers) == (1, 1):
                    assert list(sampler) == shares[-1]
            assert len({len(s) for s in shares}) == 1  # equal counts per rank
            counts = Counter(i for share in shares for i in share)
            if drop_last:
                assert len(counts) == sum(map(len, shares)) == size - size % world_size
                assert max(counts.values()) == 1
            else:
                assert sorted(counts) == list(range(size))
                assert sum(counts.values()) == -(-size // world_size) * world_size
                assert sum(c - 1 for c in counts.values()) == (-size) % world_size


def test_order_depends_only_on_seed_epoch_rank_world_size(opensdi_root):
    def order(seed=1, epoch=0, rank=0, world_size=2):
        sampler = RowGroupShuffleSampler(_dataset(opensdi_root), seed=seed, window=4, rank=rank, world_size=world_size)
        sampler.set_epoch(epoch)
        return list(sampler)

    assert order() == order()
    assert order() != order(epoch=1)
    assert order() != order(seed=2)
    assert order() != order(rank=1)
    assert order(world_size=1) != order()
    assert order(world_size=1) != list(range(len(_dataset(opensdi_root))))


def _spread(order: np.ndarray, values: np.ndarray, batch_size: int = 16) -> float:
    batches = order[: len(order) // batch_size * batch_size].reshape(-1, batch_size)
    return float(values[batches].mean(axis=1).std())


@pytest.mark.parametrize("workers", [1, 2])
def test_batches_mix_labels_and_generators_like_global_shuffle(sorted_shards, workers):
    dataset = _dataset(sorted_shards)
    fake = np.array([dataset.label(i) for i in range(len(dataset))], float)
    generator = np.array([dataset.generator(i) for i in range(len(dataset))])
    sampler = RowGroupShuffleSampler(dataset, seed=0)
    ours, shuffled = defaultdict(list), defaultdict(list)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        order = sampler.order(16, workers)
        everywhere = np.random.default_rng(epoch).permutation(len(dataset))
        for name, values in [("fake", fake)] + [(g, (generator == g).astype(float)) for g in GENERATORS]:
            ours[name].append(_spread(order, values))
            shuffled[name].append(_spread(everywhere, values))
    for name in ours:
        ratio = np.mean(ours[name]) / np.mean(shuffled[name])
        assert ratio < 1.5, (
            f"the share of {name} per batch of 16 spreads {ratio:.2f}x as much as under global shuffling"
        )


def test_each_row_group_read_once_per_epoch(opensdi_root):
    def reads(order) -> tuple[int, int, int]:
        dataset = _dataset(opensdi_root, generators=["sd15", "sd2", "sdxl"])
        dataset.keep_row_groups(3)
        cached = 0
        for i in order(dataset):
            dataset[i]
            cached = max(cached, len(dataset._reader._groups))
        return dataset._reader.groups_read, dataset._reader.bytes_read, cached

    in_order = reads(lambda d: range(len(d)))
    rowgroup = reads(lambda d: RowGroupShuffleSampler(d, seed=3, window=3))
    everywhere = reads(lambda d: np.random.default_rng(0).permutation(len(d)).tolist())
    assert rowgroup == (*in_order[:2], 3)
    assert everywhere[0] > 2 * in_order[0] and everywhere[1] > 2 * in_order[1]


def _worker(data: dict) -> None:
    data["worker"] = get_worker_info().id


@pytest.mark.parametrize("workers", [2, 3])
def test_workers_keep_their_row_groups(opensdi_root, workers):
    dataset = _dataset(opensdi_root, post_funcs=[_worker])
    groups = dataset.row_groups()
    name_to_index = {dataset.key(i): i for i in range(len(dataset))}
    sampler = RowGroupShuffleSampler(dataset, seed=0, window=2)
    batches = RowGroupBatchSampler(sampler, batch_size=4, num_workers=workers, drop_last=False)
    served = defaultdict(set)
    names = []
    for batch in DataLoader(dataset, batch_sampler=batches, num_workers=workers):
        for name, worker in zip(batch["name"], batch["worker"].tolist()):
            served[groups[name_to_index[name]]].add(worker)
            names.append(name)
    assert sorted(names) == sorted(name_to_index)
    shared = [g for g, w in served.items() if len(w) > 1]
    assert len(shared) <= workers - 1  # only a group cut at the edge of two workers' parts
    assert {w for ws in served.values() for w in ws} == set(range(workers))


def test_needs_row_groups(mani_export):
    from IMDLBenCo.datasets import ManiDataset

    with pytest.raises(OpenSDIError, match="ManiDataset"):
        RowGroupShuffleSampler(ManiDataset(str(mani_export), is_resizing=True, output_size=(32, 32)))


def _loader_config(shuffle: str):
    from imdlbenco_maskclip.cli import train
    from imdlbenco_maskclip.cli.options import typed
    from imdlbenco_maskclip.training.config import TrainConfig

    return typed(TrainConfig, train.OPTIONS, {"shuffle": shuffle, "seed": 7, "num_workers": 0, "batch_size": 4})


def test_training_loader_uses_rowgroup_order_for_opensdi_only(opensdi_root, mani_export):
    from IMDLBenCo.datasets import ManiDataset

    from imdlbenco_maskclip.host.runtime import Runtime
    from imdlbenco_maskclip.training.loop import _training_loader

    runtime = Runtime(device=torch.device("cpu"))
    opensdi = _dataset(opensdi_root)
    loader = _training_loader(opensdi, _loader_config("rowgroup"), runtime)
    assert isinstance(loader.batch_sampler, RowGroupBatchSampler) and loader.batch_sampler.sampler.seed == 7
    assert isinstance(_training_loader(opensdi, _loader_config("global"), runtime).sampler, RandomSampler)
    mani = ManiDataset(str(mani_export), is_resizing=True, output_size=(32, 32))
    assert isinstance(_training_loader(mani, _loader_config("rowgroup"), runtime).sampler, RandomSampler)


def test_train_uses_rowgroup_order_and_resume_replays_it(tmp_path, monkeypatch):
    import IMDLBenCo.training_scripts.trainer as trainer

    from dataset_adapters.synthetic import write_synthetic_opensdi
    from imdlbenco_maskclip.cli import benco

    write_synthetic_opensdi(
        tmp_path / "train", generators=("sd15",), n_per_class=3, image_size=32, seed=2, rows_per_group=4
    )
    real_epoch = trainer.train_one_epoch
    seen: dict[tuple[str, int], list[str]] = {}
    kill_at = {"epoch": None}

    def recording(model, data_loader, optimizer, device, epoch, *args, **kwargs):
        run = Path(kwargs["args"].output_dir).name

        class Recorded:
            def __len__(self):
                return len(data_loader)

            def __iter__(self):
                for batch in data_loader:
                    seen.setdefault((run, epoch), []).extend(batch["name"])
                    yield batch

        if epoch == kill_at["epoch"]:
            raise KeyboardInterrupt
        return real_epoch(model, Recorded(), optimizer, device, epoch, *args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", recording)

    def train(run: str, *extra: str) -> int:
        return benco.main(
            [
                "train",
                "--model",
                "MaskCLIP",
                "--setting",
                "tiny",
                "--data_path",
                str(tmp_path / "train"),
                "--image_size",
                "32",
                "--batch_size",
                "4",
                "--epochs",
                "2",
                "--augment",
                "none",
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--seed",
                "7",
                "--output_dir",
                str(tmp_path / run),
                *extra,
            ]
        )

    assert train("straight") == 0
    kill_at["epoch"] = 1
    assert train("interrupted") == 130
    assert ("interrupted", 1) not in seen
    kill_at["epoch"] = None
    assert train("interrupted", "--resume", "auto") == 0
    assert seen[("interrupted", 1)] == seen[("straight", 1)]
    assert seen[("interrupted", 0)] == seen[("straight", 0)] != seen[("straight", 1)]

    dataset = _dataset(tmp_path / "train")
    sampler = RowGroupShuffleSampler(dataset, seed=7)
    for epoch in (0, 1):
        sampler.set_epoch(epoch)
        expected = [dataset.key(i) for i in sampler.order()]
        assert seen[("straight", epoch)] == expected[: len(expected) // 4 * 4]
