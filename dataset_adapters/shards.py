"""Find OpenSDI parquet shards, check them, and index their rows without reading image bytes.

A source is a local folder (as ``huggingface-cli download`` leaves it, shards at any depth), one
parquet file, a glob, a list of those, or a hub id such as ``nebula/OpenSDI_test``. The index holds
per row only the shard number, the row number, the label, whether a mask is present and the key:
compact numpy arrays plus one arrow string array, so the 200,824-row training split costs a few MB.
"""

from __future__ import annotations

import glob
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Union

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.vocabulary import KINDS, generator_order

REQUIRED_COLUMNS = ("key", "image", "mask", "label")
SUBSETS = ("all", "detection", "localization")
OTHER_KIND = "other"

SourceLike = Union[str, os.PathLike, Sequence[Union[str, os.PathLike]]]

_SHARD_NAME = re.compile(r"^(?P<generator>.+?)-\d+-of-\d+\.parquet$")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")
_GLOB_CHARS = re.compile(r"[*?\[]")


@dataclass(frozen=True)
class Shard:
    """One parquet file: where it is, which generator it holds, its row groups' sizes, the column
    whose read tells whether ``mask`` is null, and the stored label ids of real and fake."""

    path: str
    generator: str
    group_rows: tuple[int, ...]
    mask_probe: str
    label_ids: tuple[int, int] = (0, 1)


def generator_of(path: str) -> str:
    """The generator a shard holds: ``sd15`` for ``sd15-00003-of-00019.parquet``, else the file's stem."""
    name = os.path.basename(path)
    match = _SHARD_NAME.match(name)
    return match.group("generator") if match else Path(name).stem


def find_shards(source: SourceLike, generators: Sequence[str] | None = None) -> list[Shard]:
    """Locate, check and order the shards of ``source``, keeping only ``generators`` (default or empty: all)."""
    files = _locate(source, generators)
    shards = [_open_shard(f) for f in files]
    present = generator_order([s.generator for s in shards])
    if generators:
        wanted = list(dict.fromkeys(generators))
        unknown = [g for g in wanted if g not in present]
        if unknown:
            raise OpenSDIError(
                f"unknown generator(s) {', '.join(unknown)} in {_describe(source)}; present: {', '.join(present)}"
            )
        shards = [s for s in shards if s.generator in wanted]
    rank = {g: i for i, g in enumerate(present)}
    return sorted(shards, key=lambda s: (rank[s.generator], s.path))


def list_generators(source: SourceLike) -> list[str]:
    """The generators present in ``source``, in the paper's order (reads only parquet footers)."""
    return generator_order([s.generator for s in find_shards(source)])


def _describe(source: SourceLike) -> str:
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    return f"{len(source)} paths"


def _locate(source: SourceLike, generators: Sequence[str] | None) -> list[str]:
    if isinstance(source, (str, os.PathLike)):
        items = [os.fspath(source)]
    else:
        items = [os.fspath(s) for s in source]
        if not items:
            raise OpenSDIError("no OpenSDI source given: the list of paths is empty")
    files: list[str] = []
    for item in items:
        files.extend(_locate_one(item, generators))
    return sorted(set(os.path.abspath(f) for f in files))


def _locate_one(item: str, generators: Sequence[str] | None) -> list[str]:
    if os.path.isdir(item):
        found = _parquet_under(item)
        if not found:
            raise OpenSDIError(f"no .parquet files under {item}")
        return found
    if os.path.isfile(item):
        return [item]
    if _GLOB_CHARS.search(item):
        found = sorted(p for p in glob.glob(item, recursive=True) if os.path.isfile(p))
        if not found:
            raise OpenSDIError(f"no files match {item}")
        return found
    if _HUB_ID.match(item) and not os.path.isdir(item.split("/")[0]):
        return _parquet_under(_download(item, generators))
    raise FileNotFoundError(f"no such file, folder or hub dataset: {item}")


def _parquet_under(folder: str) -> list[str]:
    found = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found.extend(os.path.join(root, n) for n in names if n.endswith(".parquet") and not n.startswith("."))
    return sorted(found)


def _download(repo_id: str, generators: Sequence[str] | None) -> str:
    """The local snapshot of a hub dataset's shards: from the cache if there, else downloaded."""
    from huggingface_hub import snapshot_download

    patterns = [f"data/{g}-*.parquet" for g in generators] if generators else ["data/*.parquet"]
    try:
        folder = snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns, local_files_only=True)
    except Exception:  # not cached (or incompletely): fall through to the online attempt
        folder = None
    if folder is None or not _parquet_under(folder):
        try:
            folder = snapshot_download(repo_id, repo_type="dataset", allow_patterns=patterns)
        except Exception as error:
            local = f"data/{repo_id.split('/')[-1]}"
            raise OpenSDIError(
                f"cannot get the hub dataset {repo_id} ({type(error).__name__}: {str(error).splitlines()[0]}). "
                f"Download the shards where there is network access with\n"
                f"  huggingface-cli download {repo_id} --repo-type dataset --local-dir {local}\n"
                f"and pass the folder ({local}) instead of the hub id."
            ) from None
    if not _parquet_under(folder):
        raise OpenSDIError(f"the hub dataset {repo_id} has no shards matching {', '.join(patterns)}")
    return folder


def _open_shard(path: str) -> Shard:
    try:
        with pq.ParquetFile(path) as parquet:
            schema = parquet.schema_arrow
            metadata = parquet.metadata
    except (pa.ArrowException, OSError) as error:
        raise OpenSDIError(f"{path} is not a readable parquet file: {error}") from None
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise OpenSDIError(
            f"{path} lacks column(s) {', '.join(missing)}; an OpenSDI shard has columns "
            f"{', '.join(REQUIRED_COLUMNS)} (found: {', '.join(schema.names) or 'none'})"
        )
    for column in ("image", "mask"):
        kind = schema.field(column).type
        if not (pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0):
            raise OpenSDIError(f"{path}: column {column} is {kind}, not an image struct<bytes, path>")
    if not pa.types.is_integer(schema.field("label").type):
        raise OpenSDIError(f"{path}: column label is {schema.field('label').type}, not an integer class label")
    if not (pa.types.is_string(schema.field("key").type) or pa.types.is_large_string(schema.field("key").type)):
        raise OpenSDIError(f"{path}: column key is {schema.field('key').type}, not a string")
    groups = tuple(metadata.row_group(i).num_rows for i in range(metadata.num_row_groups))
    return Shard(
        path=path,
        generator=generator_of(path),
        group_rows=groups,
        mask_probe=_mask_probe(schema),
        label_ids=_label_ids(path, schema),
    )


def _label_ids(path: str, schema: pa.Schema) -> tuple[int, int]:
    """(id of ``real``, id of ``fake``) from the ClassLabel names that ``datasets`` keeps in the
    schema's ``huggingface`` metadata; OpenSDI's 0 and 1 for a file without such names."""
    raw = (schema.metadata or {}).get(b"huggingface")
    if raw is None:
        return 0, 1
    try:
        feature = json.loads(raw).get("info", {}).get("features", {}).get("label", {})
    except (ValueError, AttributeError):
        raise OpenSDIError(f"{path}: the schema's huggingface metadata is not valid JSON") from None
    names = feature.get("names") if isinstance(feature, dict) else None
    if names is None:
        return 0, 1
    lowered = [str(n).lower() for n in names]
    if "real" not in lowered or "fake" not in lowered:
        raise OpenSDIError(
            f"{path}: the label's class names are {', '.join(map(str, names))}; an OpenSDI shard names its classes real and fake"
        )
    return lowered.index("real"), lowered.index("fake")


def _mask_presence(parquet: pq.ParquetFile, table: pa.Table) -> np.ndarray:
    """Per row: whether ``mask`` holds bytes. The struct's validity comes with the cheap probe
    column; a row group whose column statistics show more null ``mask.bytes`` than null
    structs (a struct with a path but no bytes) has its ``mask.bytes`` read to find them."""
    present = table.column("mask").is_valid().to_numpy(zero_copy_only=False).astype(bool)
    metadata = parquet.metadata
    leaf = next((j for j in range(metadata.num_columns) if metadata.schema.column(j).path == "mask.bytes"), None)
    start = 0
    for group in range(metadata.num_row_groups):
        rows = metadata.row_group(group).num_rows
        stats = metadata.row_group(group).column(leaf).statistics if leaf is not None else None
        struct_nulls = int((~present[start : start + rows]).sum())
        if stats is None or not stats.has_null_count or stats.null_count != struct_nulls:
            column = parquet.read_row_group(group, columns=["mask.bytes"]).column("mask").combine_chunks()
            present[start : start + rows] &= pc.struct_field(column, "bytes").is_valid().to_numpy(zero_copy_only=False)
        start += rows
    return present


def _mask_probe(schema: pa.Schema) -> str:
    """A cheap child of ``mask`` whose read carries the struct's validity: ``path``, not ``bytes``."""
    mask_type = schema.field("mask").type
    small = [mask_type.field(i).name for i in range(mask_type.num_fields) if mask_type.field(i).name != "bytes"]
    return f"mask.{small[0] if small else 'bytes'}"


class ShardIndex:
    """Rows of some shards: shard number, row number, label (0 real, 1 fake, whatever ids the
    shard stores), mask presence (a mask with bytes) and key, one entry per row."""

    def __init__(
        self,
        shards: Sequence[Shard],
        shard: np.ndarray,
        row: np.ndarray,
        label: np.ndarray,
        has_mask: np.ndarray,
        keys: pa.Array,
    ) -> None:
        self.shards = list(shards)
        self.shard = shard
        self.row = row
        self.label = label
        self.has_mask = has_mask
        self.keys = keys
        self._group_starts = [np.cumsum((0, *s.group_rows))[:-1] for s in self.shards]

    @classmethod
    def build(cls, shards: Sequence[Shard]) -> ShardIndex:
        """Read keys, labels and mask validity of every row (never image or mask bytes)."""
        if not shards:
            raise OpenSDIError("no shards to index")
        shard_ids, rows, labels, masks, keys = [], [], [], [], []
        for number, shard in enumerate(shards):
            with pq.ParquetFile(shard.path) as parquet:
                table = parquet.read(columns=["key", "label", shard.mask_probe])
                has_mask = _mask_presence(parquet, table)
            label = table.column("label")
            if label.null_count:
                raise OpenSDIError(f"{shard.path}: column label has {label.null_count} null value(s)")
            stored = label.to_numpy()
            real_id, fake_id = shard.label_ids
            bad = ~np.isin(stored, (real_id, fake_id))
            if bad.any():
                raise OpenSDIError(
                    f"{shard.path}: label {int(stored[bad][0])} at row {int(np.argmax(bad))}; "
                    f"this shard's labels are {real_id} (real) and {fake_id} (fake)"
                )
            label = (stored == fake_id).astype(np.int8)
            key = table.column("key").combine_chunks()
            if key.null_count:
                raise OpenSDIError(f"{shard.path}: column key has {key.null_count} null value(s)")
            shard_ids.append(np.full(table.num_rows, number, dtype=np.int16))
            rows.append(np.arange(table.num_rows, dtype=np.int32))
            labels.append(label)
            masks.append(has_mask)
            keys.append(key.cast(pa.large_string()))
        return cls(
            shards,
            np.concatenate(shard_ids),
            np.concatenate(rows),
            np.concatenate(labels),
            np.concatenate(masks),
            pa.concat_arrays(keys),
        )

    def __len__(self) -> int:
        return len(self.row)

    def select(self, keep: np.ndarray) -> ShardIndex:
        """The rows where the boolean array ``keep`` is true, in order."""
        positions = np.flatnonzero(keep)
        return ShardIndex(
            self.shards,
            self.shard[positions],
            self.row[positions],
            self.label[positions],
            self.has_mask[positions],
            self.keys.take(pa.array(positions, type=pa.int64())),
        )

    def subset(self, subset: str) -> ShardIndex:
        """``all`` and ``detection``: every row; ``localization``: fake rows with a mask."""
        if subset not in SUBSETS:
            raise OpenSDIError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
        if subset == "localization":
            return self.select((self.label == 1) & self.has_mask)
        return self

    def kinds(self) -> np.ndarray:
        """Per row: ``entire``, ``partial`` (the key's first folder) or ``other``."""
        result = np.full(len(self), OTHER_KIND, dtype=object)
        for kind in KINDS:
            hit = pc.starts_with(self.keys, f"{kind}/").to_numpy(zero_copy_only=False)
            result[hit] = kind
        return result

    def key(self, i: int) -> str:
        return self.keys[i].as_py()

    def row_groups(self) -> np.ndarray:
        """Per row, the number of its row group: shard by shard, group by group (int64)."""
        first = np.cumsum([0] + [len(s.group_rows) for s in self.shards])
        result = np.empty(len(self), np.int64)
        for number, starts in enumerate(self._group_starts):
            hit = self.shard == number
            result[hit] = first[number] + np.searchsorted(starts, self.row[hit], side="right") - 1
        return result

    def location(self, i: int) -> tuple[int, int, int]:
        """(shard number, row group, row within the group) of row ``i``."""
        shard = int(self.shard[i])
        row = int(self.row[i])
        starts = self._group_starts[shard]
        group = int(np.searchsorted(starts, row, side="right")) - 1
        return shard, group, row - int(starts[group])
