"""Read and decode the image and mask bytes of rows, one row group at a time, per process.

Parquet cannot read a single row: the smallest read is a column chunk of one row group. The reader
keeps the last row group's ``image.bytes`` (and, once a row needs it, ``mask.bytes``) so that walking
the rows in order (testing, exporting) reads each group once, and keeps a few files open. Open
files and cached groups belong to the process that made them: they are dropped when pickled into
DataLoader workers and reopened after a fork.
"""

from __future__ import annotations

import io
import os
import struct
from collections import OrderedDict
from typing import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.shards import Shard

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


class RowReader:
    """Bytes of rows given as (shard number, row group, row within the group)."""

    def __init__(self, shards: Sequence[Shard]) -> None:
        self.shards = list(shards)
        self._reset()

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._files: OrderedDict[int, pq.ParquetFile] = OrderedDict()
        self._group: tuple[int, int] | None = None
        self._columns: dict[str, pa.Array] = {}

    def __getstate__(self) -> dict:
        return {"shards": self.shards}

    def __setstate__(self, state: dict) -> None:
        self.shards = state["shards"]
        self._reset()

    def close(self) -> None:
        """Close the open files and drop the cached row group."""
        for parquet in self._files.values():
            parquet.close()
        self._reset()

    def read(self, shard: int, group: int, row: int, with_mask: bool) -> tuple[bytes | None, bytes | None]:
        """Image bytes and (when ``with_mask``) mask bytes of that row; None where the cell is null."""
        if self._pid != os.getpid():
            self._reset()
        if self._group != (shard, group):
            self._group = (shard, group)
            self._columns = {}
        wanted = ["image"] + (["mask"] if with_mask else [])
        missing = [c for c in wanted if c not in self._columns]
        if missing:
            try:
                table = self._file(shard).read_row_group(group, columns=[f"{c}.bytes" for c in missing])
            except (pa.ArrowException, OSError) as error:
                raise OpenSDIError(
                    f"cannot read row group {group} of shard {self.shards[shard].path}: {error}"
                ) from None
            for column in missing:
                self._columns[column] = pc.struct_field(table.column(column).combine_chunks(), "bytes")
        image = self._columns["image"][row].as_py()
        mask = self._columns["mask"][row].as_py() if with_mask else None
        return image, mask

    def _file(self, shard: int) -> pq.ParquetFile:
        parquet = self._files.get(shard)
        if parquet is None:
            parquet = pq.ParquetFile(self.shards[shard].path)
            self._files[shard] = parquet
            if len(self._files) > _OPEN_FILES:
                self._files.popitem(last=False)[1].close()
        else:
            self._files.move_to_end(shard)
        return parquet
