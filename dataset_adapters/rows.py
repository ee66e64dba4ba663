"""Read and decode the image and mask bytes of rows, one row group at a time, per process.

Parquet cannot read a single row: the smallest read is a column chunk of one row group. The reader
keeps the ``image.bytes`` (and, once a row needs it, ``mask.bytes``) of the last ``capacity`` row
groups it opened, dropping the first opened first, so that walking the rows in order (testing,
exporting; capacity 1) or in ``RowGroupShuffleSampler``'s order (capacity = its window) reads each
group once. Its memory is ``capacity`` times the bytes of a row group's image and mask columns,
and about 0.6 of a group more while one is read from the memory-mapped file (pyarrow's pool peaks
at 1.6 times the group; read into buffers it would be 3 times). It keeps a few files open. Open
files and cached groups belong to the process that made them: they are dropped when pickled into
DataLoader workers and reopened after a fork.
"""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.shards import Shard, ShardIndex, SourceLike, find_shards

_OPEN_FILES = 4
DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, Image.DecompressionBombError)


def decode_rgb(data: bytes | None, what: str, key: str, shard: str) -> Image.Image:
    """PIL image of ``data`` converted to RGB as Benco's ``pil_loader`` does; errors name key and shard."""
    if data is None:
        raise OpenSDIError(f"the {what} of key {key!r} in shard {shard} has no bytes")
    try:
        image = Image.open(io.BytesIO(data))
        if image.mode == "RGB":
            image.load()
            return image
        return image.convert("RGB")
    except DECODE_ERRORS as error:
        raise OpenSDIError(
            f"cannot decode the {what} of key {key!r} in shard {shard}: {type(error).__name__}: {error}"
        ) from None


def image_header(data: bytes) -> tuple[str, tuple[int, int]]:
    """Format name and (width, height) from an image's header, without decoding its pixels.
    Raises one of ``DECODE_ERRORS`` when the header cannot be read."""
    with Image.open(io.BytesIO(data)) as image:
        return image.format or "", image.size


def group_images(parquet: pq.ParquetFile, path: str, group: int) -> Iterator[bytes | None]:
    """The ``image.bytes`` of one whole row group, in row order, one value at a time (the column
    is not copied whole): for passes over every row's header (``info``, ``audit``)."""
    try:
        table = parquet.read_row_group(group, columns=["image.bytes"])
    except (pa.ArrowException, OSError) as error:
        raise OpenSDIError(f"cannot read row group {group} of shard {path}: {error}") from None
    for chunk in table.column("image").chunks:
        for value in pc.struct_field(chunk, "bytes"):
            yield value.as_py()


class RowReader:
    """Bytes of rows given as (shard number, row group, row within the group).

    ``groups_read`` counts the row-group column reads of this process (a group whose mask column is
    read after its image column counts twice) and ``bytes_read`` their stored sizes, for tests and
    benchmarks that check each group is read once.
    """

    def __init__(self, shards: Sequence[Shard], capacity: int = 1) -> None:
        self.shards = list(shards)
        self.capacity = capacity
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._groups: OrderedDict[tuple[int, int], dict[str, pa.Array]] = OrderedDict()
        self.groups_read = 0
        self.bytes_read = 0

    def __getstate__(self) -> dict:
        return {"shards": self.shards, "capacity": self.capacity}

    def __setstate__(self, state: dict) -> None:
        self.shards = state["shards"]
        self.capacity = state["capacity"]
        self._reset()

    def keep(self, capacity: int) -> None:
        """Cache up to ``capacity`` row groups (at least 1), dropping the first opened first."""
        if capacity < 1:
            raise ValueError(f"a row-group cache holds at least one group, not {capacity}")
        self.capacity = capacity
        self._evict()

    def _evict(self) -> None:
        """Drop the first opened row groups beyond ``capacity``."""
        while len(self._groups) > self.capacity:
            self._groups.popitem(last=False)

    def close(self) -> None:
        """Close the open files and drop the cached row group."""
        for parquet in self._files.values():
            parquet.close()
        self._reset()

    def read(self, shard: int, group: int, row: int, with_mask: bool) -> tuple[bytes | None, bytes | None]:
        """Image bytes and (when ``with_mask``) mask bytes of that row; None where the cell is null."""
        if self._pid != os.getpid():
            self._reset()
        columns = self._groups.get((shard, group))
        if columns is None:
            columns = self._groups[(shard, group)] = {}
            self._evict()
        wanted = ["image"] + (["mask"] if with_mask else [])
        missing = [c for c in wanted if c not in columns]
        if missing:
            paths = [f"{c}.bytes" for c in missing]
            try:
                parquet = self._file(shard)
                table = parquet.read_row_group(group, columns=paths)
            except (pa.ArrowException, OSError) as error:
                raise OpenSDIError(
                    f"cannot read row group {group} of shard {self.shards[shard].path}: {error}"
                ) from None
            stored = parquet.metadata.row_group(group)
            self.groups_read += len(missing)
            self.bytes_read += sum(
                stored.column(i).total_compressed_size
                for i in range(stored.num_columns)
                if stored.column(i).path_in_schema in paths
            )
            for column in missing:
                chunks = table.column(column)
                whole = chunks.chunk(0) if chunks.num_chunks == 1 else chunks.combine_chunks()  # one copy at most
                columns[column] = pc.struct_field(whole, "bytes")
        image = columns["image"][row].as_py()
        mask = columns["mask"][row].as_py() if with_mask else None
        return image, mask

    def _file(self, shard: int) -> pq.ParquetFile:
        parquet = self._files.get(shard)
        if parquet is None:
            parquet = pq.ParquetFile(self.shards[shard].path, memory_map=True)
            self._files[shard] = parquet
            if len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        return parquet


def iter_shard_images(source: SourceLike) -> Iterator[tuple[str, str, Callable[[], Image.Image]]]:
    """(key, shard path, load) for every row of ``source``; ``load()`` decodes the image to RGB.

    Loading the rows in order reads each row group once; nothing is decoded before ``load`` is called.
    """
    index = ShardIndex.build(find_shards(source))
    reader = RowReader(index.shards)
    for i in range(len(index)):
        shard, group, row = index.location(i)
        key, path = index.key(i), index.shards[shard].path

        def load(shard: int = shard, group: int = group, row: int = row, key: str = key, path: str = path):
            return decode_rgb(reader.read(shard, group, row, False)[0], "image", key, path)

        yield key, path, load
