"""A shuffled training order that reads each parquet row group once per epoch per process.

Parquet reads whole row groups (100 rows, tens of MB, in the published shards), so visiting rows in
a globally random order reads and decodes a whole group for almost every sample. Here each epoch:

1. the row groups are put in a random order that depends on (seed, epoch) and is the same on all
   ranks; their rows, group after group, form one sequence;
2. like ``DistributedSampler``, the sequence is padded by repeating its start (or, with
   ``drop_last``, cut) to a multiple of ``world_size``, and each rank takes its own contiguous
   share, so every row is used once per epoch across the ranks and a group is split between two
   ranks only at a share's edge;
3. each rank shuffles its rows within a moving window of ``window`` row groups. On a common time
   line the j-th group opens at time j (the first ``window`` groups all near 0, in order) and
   closes when group j + window opens (the last ``window`` groups all at the end); its rows get
   random times in between, one of them the opening time, and are taken in time order. A batch
   thus mixes rows of about ``window`` groups (shards, generators, labels); groups open in
   sequence, and when group j opens, group j - window is finished: a cache of ``window`` groups,
   first opened dropped first, reads each group once.

With DataLoader workers, ``RowGroupBatchSampler`` cuts the rank's share into one contiguous part
per worker, shuffles each part as in step 3, and lays the batches out in turn, as the DataLoader
hands batch k to worker k % num_workers: each worker reads its own groups, each once (a group
split at a part's edge is read by both workers). A batch then mixes about min(window, groups in
the part) groups: on the published training split (about 2,000 groups), 8 ranks of 8 workers
leave 31 groups per part.

The order depends only on (seed, epoch, rank, world_size), and with workers also on the batch
size and the number of workers: a resumed run with the same settings replays it.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler

from dataset_adapters.errors import OpenSDIError


class RowGroupShuffleSampler(Sampler[int]):
    """This rank's sample indices for an epoch, shuffled within a moving window of row groups.

    ``dataset`` is an ``OpenSDIDataset`` (anything with ``row_groups()`` and ``keep_row_groups(n)``);
    the sampler sets its per-process cache to ``window`` row groups, so each process holds at most
    ``window`` groups' image and mask bytes (16 x about 17 MB on the published training shards).
    Call ``set_epoch(epoch)`` before each epoch, as with ``DistributedSampler``.
    """

    def __init__(
        self, dataset, seed: int = 0, window: int = 16, rank: int = 0, world_size: int = 1, drop_last: bool = False
    ) -> None:
        if not hasattr(dataset, "row_groups"):
            raise OpenSDIError(
                f"RowGroupShuffleSampler needs a dataset read from parquet row groups (OpenSDIDataset), "
                f"not {type(dataset).__name__}"
            )
        if window < 1:
            raise OpenSDIError(f"window must be at least 1 row group, not {window}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise OpenSDIError(f"rank {rank} is not one of world_size {world_size} ranks")
        self._groups = np.asarray(dataset.row_groups(), dtype=np.int64)
        size = len(self._groups)
        self.num_samples = size // world_size if drop_last else -(-size // world_size)
        if self.num_samples == 0:
            raise OpenSDIError(f"{size} samples cannot be shared among {world_size} ranks")
        self.seed = seed
        self.window = window
        self.rank = rank
        self.world_size = world_size
        self.drop_last = drop_last
        self.epoch = 0
        dataset.keep_row_groups(window)

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.epoch = epoch

    def __len__(self) -> int:
        return self.num_samples

    def __iter__(self) -> Iterator[int]:
        return iter(self.order().tolist())

    def share(self) -> np.ndarray:
        """This rank's rows for the epoch, row group after row group (steps 1 and 2, not yet shuffled)."""
        count = int(self._groups.max()) + 1
        group_order = np.random.default_rng([self.seed, self.epoch]).permutation(count)
        place = np.empty(count, np.int64)
        place[group_order] = np.arange(count)
        sequence = np.argsort(place[self._groups], kind="stable")
        sequence = np.resize(sequence, self.num_samples * self.world_size)
        return sequence[self.rank * self.num_samples : (self.rank + 1) * self.num_samples]

    def order(self, batch_size: int = 1, workers: int = 1) -> np.ndarray:
        """This rank's indices for the epoch; with ``workers`` > 1, laid out so that batch k (indices
        ``k * batch_size`` to ``(k + 1) * batch_size``) holds rows of part ``k % workers`` only."""
        share = self.share()
        batches = -(-len(share) // batch_size)
        sizes = np.full(batches, batch_size)
        sizes[-1] = len(share) - batch_size * (batches - 1)
        owner = np.arange(batches) % workers
        part_sizes = np.bincount(owner, weights=sizes, minlength=workers).astype(np.int64)
        edges = np.concatenate([[0], np.cumsum(part_sizes)])
        parts = [self._window_shuffle(share[edges[p] : edges[p + 1]], p, workers) for p in range(workers)]
        taken = np.zeros(workers, np.int64)
        result = np.empty_like(share)
        start = 0
        for k in range(batches):
            p, size = owner[k], sizes[k]
            result[start : start + size] = parts[p][taken[p] : taken[p] + size]
            taken[p] += size
            start += size
        return result

    def _window_shuffle(self, rows: np.ndarray, part: int, parts: int) -> np.ndarray:
        """``rows`` (group after group) shuffled within a moving window of ``window`` groups (step 3)."""
        if len(rows) == 0:
            return rows
        rng = np.random.default_rng([self.seed, self.epoch, self.world_size, self.rank, parts, part])
        groups = self._groups[rows]
        starts = np.flatnonzero(np.concatenate([[True], groups[1:] != groups[:-1]]))
        lengths = np.diff(np.concatenate([starts, [len(rows)]]))
        count, window = len(starts), self.window
        number = np.arange(count)
        opens = np.where(number < window, number * 0.5 / window, number)
        closes = np.where(number < count - window, number + window, max(opens[-1], window - 1) + window)
        segment = np.repeat(number, lengths)
        time = opens[segment] + rng.random(len(rows)) * (closes - opens)[segment]
        opener = starts + (rng.random(count) * lengths).astype(np.int64)
        time[opener] = opens[number]
        return rows[np.argsort(time, kind="stable")]


class RowGroupBatchSampler(Sampler[list[int]]):
    """Batches of a ``RowGroupShuffleSampler`` for a DataLoader with ``num_workers`` workers, so that
    each worker reads its own row groups (pass it as the DataLoader's ``batch_sampler``)."""

    def __init__(self, sampler: RowGroupShuffleSampler, batch_size: int, num_workers: int, drop_last: bool) -> None:
        if batch_size < 1:
            raise OpenSDIError(f"batch_size must be at least 1, not {batch_size}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.workers = max(1, num_workers)
        self.drop_last = drop_last

    def set_epoch(self, epoch: int) -> None:
        """Use the order of ``epoch`` from the next iteration on."""
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return -(-len(self.sampler) // self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        order = self.sampler.order(self.batch_size, self.workers).tolist()
        for k in range(len(self)):
            yield order[k * self.batch_size : (k + 1) * self.batch_size]
