"""The inputs of a ``benco predict`` job and each process's share of them.

Inputs are image files, folders (searched recursively, each sorted; the parquet files in a folder
read as shards) and OpenSDI parquet shards, in the order given. They are planned as units without
reading an image: a file is a unit of one image, a parquet row group a unit of its rows (counted
from the footer). Under torchrun every process makes the same plan and takes a contiguous run of
units holding about 1/N of the images (shares differ by at most a row group), then reads only its
own units: the keys of its row groups, later their image bytes. Every image is thus predicted by
exactly one process, whatever the number of processes.

An input is identified by (``source``, ``key``): the file or shard as given on the command line
(a folder's files joined to the folder as given), and the file's path inside the folder given
(its name for a file given alone) or the row's ``key``. An input named twice (a file and its
folder, a shard given twice) is planned once.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.inference.predictor import NamedImage

if TYPE_CHECKING:
    from dataset_adapters.rows import RowReader
    from dataset_adapters.shards import Shard

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class Unit:
    """What one process reads as a whole: an image file (``key`` set, ``count`` 1) or one row
    group of a parquet shard (``shard`` and ``group`` set; its ``count`` rows' keys are read
    with it)."""

    source: str
    count: int
    key: str | None = None
    shard: Shard | None = None
    group: int = 0


def _shard_units(path: Path) -> list[Unit]:
    from dataset_adapters.shards import find_shards

    (shard,) = find_shards(str(path))
    shard = dataclasses.replace(shard, path=str(path))  # the source as given, not made absolute
    return [Unit(str(path), rows, shard=shard, group=group) for group, rows in enumerate(shard.group_rows)]


def plan_inputs(entries: Sequence[str], leave_out: Path | None = None) -> list[Unit]:
    """The units of ``entries`` in the job's order; files under ``leave_out`` (the output
    folder) are not inputs. Reads parquet footers only."""
    leave_out = leave_out.expanduser().resolve() if leave_out is not None else None
    units: list[Unit] = []
    for entry in entries:
        path = Path(entry).expanduser()
        if path.is_file() and path.suffix.lower() == ".parquet":
            units.extend(_shard_units(path))
        elif path.is_file():
            units.append(Unit(str(path), 1, key=path.name))
        elif path.is_dir():
            root = path.resolve()
            skipped = path / leave_out.relative_to(root) if leave_out and leave_out.is_relative_to(root) else None
            files = sorted(p for p in path.rglob("*") if p.is_file() and not (skipped and p.is_relative_to(skipped)))
            for shard in (p for p in files if p.suffix.lower() == ".parquet"):
                units.extend(_shard_units(shard))
            units.extend(
                Unit(str(p), 1, key=str(p.relative_to(path))) for p in files if p.suffix.lower() in IMAGE_SUFFIXES
            )
        else:
            raise UserError(f"INPUTS: no image, folder or shard at {entry}")
    first: dict[tuple[str, int], Unit] = {}
    for unit in units:
        first.setdefault((unit.source, unit.group), unit)
    units = list(first.values())
    if not sum(unit.count for unit in units):
        raise UserError(
            f"INPUTS: no images found in {', '.join(entries)} (looked for {', '.join(sorted(IMAGE_SUFFIXES))} and .parquet)"
        )
    return units


def share_bounds(units: Sequence[Unit], rank: int, world_size: int) -> tuple[int, int]:
    """(first, end) unit numbers of process ``rank``'s share: the units whose first image falls in
    its 1/``world_size`` of the job's images."""
    counts = np.array([unit.count for unit in units], dtype=np.int64)
    starts = np.cumsum(counts) - counts
    owner = np.minimum(starts * world_size // max(int(counts.sum()), 1), world_size - 1)
    mine = np.flatnonzero(owner == rank)
    return (int(mine[0]), int(mine[-1]) + 1) if len(mine) else (0, 0)


def _load_row(reader: RowReader, shard: int, group: int, row: int, key: str, path: str) -> Image.Image:
    from dataset_adapters.rows import decode_rgb

    return decode_rgb(reader.read(shard, group, row, False)[0], "image", key, path)


def read_inputs(units: Sequence[Unit]) -> list[NamedImage]:
    """One ``NamedImage`` per image of ``units`` (``name`` is the key), in order. Reads the
    ``key`` column of each row group; the image bytes are read when an input is loaded, one row
    group at a time per process."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from dataset_adapters.errors import OpenSDIError
    from dataset_adapters.rows import RowReader

    shards = list({unit.shard.path: unit.shard for unit in units if unit.shard is not None}.values())
    number = {shard.path: i for i, shard in enumerate(shards)}
    reader = RowReader(shards)
    opened: dict[str, pq.ParquetFile] = {}
    inputs: list[NamedImage] = []
    try:
        for unit in units:
            if unit.shard is None:
                inputs.append(NamedImage(unit.key, unit.source))
                continue
            parquet = opened.setdefault(unit.source, pq.ParquetFile(unit.source))
            try:
                keys = parquet.read_row_group(unit.group, columns=["key"]).column("key").to_pylist()
            except (pa.ArrowException, OSError) as error:
                raise OpenSDIError(
                    f"cannot read the keys of row group {unit.group} of shard {unit.source}: {error}"
                ) from None
            shard = number[unit.source]
            inputs.extend(
                NamedImage(
                    key, unit.source, functools.partial(_load_row, reader, shard, unit.group, row, key, unit.source)
                )
                for row, key in enumerate(keys)
            )
    finally:
        for parquet in opened.values():
            parquet.close()
    return inputs


def worker_order(count: int, batch_size: int, workers: int) -> list[int]:
    """An order of ``count`` inputs in which batch k (of ``batch_size``) holds inputs of the
    ``k % workers``-th contiguous part only: a DataLoader hands batch k to worker ``k % workers``,
    so each worker reads its own row groups, each once."""
    if workers <= 1 or count == 0:
        return list(range(count))
    batches = -(-count // batch_size)
    sizes = [batch_size] * batches
    sizes[-1] = count - batch_size * (batches - 1)
    part_sizes = [sum(sizes[p::workers]) for p in range(workers)]
    next_in_part = list(np.cumsum([0, *part_sizes[:-1]]))
    order: list[int] = []
    for k, size in enumerate(sizes):
        part = k % workers
        order.extend(range(next_in_part[part], next_in_part[part] + size))
        next_in_part[part] += size
    return order
