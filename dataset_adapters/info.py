"""What a set of OpenSDI shards holds: rows per generator, kind and class, and image sizes.

Counts come from the index (keys, labels, mask validity; no image bytes). Sizes need the image
headers, which live inside the image bytes, so reading all of them means reading the whole data
(34.6 GB for the training split). By default only whole row groups spread evenly over the shards
are read, until ``size_rows`` rows are covered; each image's size is parsed from its header by
PIL without decoding pixels. ``size_rows=0`` reads every row group.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pyarrow.parquet as pq
from tqdm import tqdm

from dataset_adapters.rows import DECODE_ERRORS, group_images, image_header
from dataset_adapters.shards import OTHER_KIND, ShardIndex, SourceLike, find_shards
from dataset_adapters.vocabulary import KINDS, generator_order

DEFAULT_SIZE_ROWS = 2000


@dataclass
class OpenSDIInfo:
    """Row counts per (generator, kind, class) and image sizes (width, height) seen in the sample."""

    source: str
    shards: int
    rows: int
    counts: dict[tuple[str, str, str], int]
    masks: dict[tuple[str, str], int]
    sizes: Counter = field(default_factory=Counter)
    size_rows_read: int = 0
    unreadable: int = 0

    def format(self) -> str:
        """A plain-text table for the terminal."""
        generators = generator_order(sorted({g for g, _, _ in self.counts}))
        kinds = [k for k in (*KINDS, OTHER_KIND) if any(key[1] == k for key in self.counts)]
        lines = [
            f"{self.source}: {self.shards} shard(s), {self.rows:,} rows",
            f"{'generator':<10} {'kind':<8} {'real':>9} {'fake':>9} {'with mask':>10}",
        ]
        for generator in generators:
            for kind in kinds:
                real = self.counts.get((generator, kind, "real"), 0)
                fake = self.counts.get((generator, kind, "fake"), 0)
                if real or fake:
                    masks = self.masks.get((generator, kind), 0)
                    lines.append(f"{generator:<10} {kind:<8} {real:>9,} {fake:>9,} {masks:>10,}")
        total_real = sum(v for (_, _, c), v in self.counts.items() if c == "real")
        total_fake = sum(v for (_, _, c), v in self.counts.items() if c == "fake")
        lines.append(f"{'total':<19} {total_real:>9,} {total_fake:>9,} {sum(self.masks.values()):>10,}")
        if self.sizes:
            widths = [w for w, _ in self.sizes.elements()]
            heights = [h for _, h in self.sizes.elements()]
            (common_w, common_h), common = self.sizes.most_common(1)[0]
            seen = sum(self.sizes.values())
            lines.append(
                f"image sizes from {self.size_rows_read:,} of {self.rows:,} rows: width {min(widths)}-{max(widths)}, "
                f"height {min(heights)}-{max(heights)}, most common {common_w}x{common_h} ({common / seen:.0%})"
            )
        if self.unreadable:
            lines.append(f"{self.unreadable} image header(s) could not be read")
        return "\n".join(lines)


def opensdi_info(
    source: SourceLike, generators: Sequence[str] | None = None, size_rows: int = DEFAULT_SIZE_ROWS
) -> OpenSDIInfo:
    """Count rows by generator, kind and class; sample image sizes from about ``size_rows`` rows (0: all)."""
    shards = find_shards(source, generators)
    index = ShardIndex.build(shards)
    kinds = index.kinds()
    generator = np.array([s.generator for s in shards], dtype=object)[index.shard]
    counts, masks = {}, {}
    for g in generator_order(sorted(set(generator))):
        for k in (*KINDS, OTHER_KIND):
            rows = (generator == g) & (kinds == k)
            for label, name in ((0, "real"), (1, "fake")):
                count = int(np.count_nonzero(rows & (index.label == label)))
                if count:
                    counts[(g, k, name)] = count
            with_mask = int(np.count_nonzero(rows & (index.label == 1) & index.has_mask))
            if with_mask:
                masks[(g, k)] = with_mask
    info = OpenSDIInfo(source=str(source), shards=len(shards), rows=len(index), counts=counts, masks=masks)
    _sample_sizes(index, size_rows, info)
    return info


def _sample_sizes(index: ShardIndex, size_rows: int, info: OpenSDIInfo) -> None:
    groups = [(s, g) for s, shard in enumerate(index.shards) for g in range(len(shard.group_rows))]
    rows_per_group = max(1, len(index) // max(1, len(groups)))
    wanted = len(groups) if size_rows <= 0 else min(len(groups), -(-size_rows // rows_per_group))
    picks = np.unique(np.linspace(0, len(groups) - 1, wanted).round().astype(int)) if wanted else []
    for pick in tqdm(picks, desc="image sizes", unit="row group"):
        shard, group = groups[pick]
        path = index.shards[shard].path
        with pq.ParquetFile(path) as parquet:
            for data in group_images(parquet, path, group):
                info.size_rows_read += 1
                size = _header_size(data)
                if size is None:
                    info.unreadable += 1
                else:
                    info.sizes[size] += 1


def _header_size(data: bytes | None) -> tuple[int, int] | None:
    """(width, height) from the image header, without decoding pixels; None if unreadable."""
    if data is None:
        return None
    try:
        return image_header(data)[1]
    except DECODE_ERRORS:
        return None
