"""``OpenSDIDataset``: OpenSDI parquet shards as Benco samples, registered in Benco's ``DATASETS``.

A sample is exactly what Benco's ``AbstractDataset.__getitem__`` makes of the same image and mask
(``image``, ``mask``, ``label``, ``shape``, ``origin_shape``, ``name``, ``edge_mask``, ``shape_mask``,
then the post-functions), in the same order of operations: augment at full resolution, recompute
the label, binarize, find the edge band, pad or resize, post-functions. Only the arithmetic differs:
binarization and the edge band run on uint8 (``dataset_adapters.masks``), and the known-constant
masks of real images and whole-image fakes skip both. ``name`` is the shard key.

Mask meaning: a real row is all 0; a fake row without a mask is all 1 (a white mask); a fake row
with a mask is its RGB mask binarized by channel mean > 127.5.
"""

from __future__ import annotations

import copy
import operator
import warnings
from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from IMDLBenCo.datasets.abstract_dataset import AbstractDataset
from IMDLBenCo.registry import DATASETS

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.masks import binarize, edge_mask
from dataset_adapters.rows import RowReader, decode_rgb
from dataset_adapters.shards import OTHER_KIND, SUBSETS, ShardIndex, SourceLike, find_shards
from dataset_adapters.vocabulary import KINDS, generator_order

ON_ERROR = ("raise", "skip")


class SampleRecord(NamedTuple):
    """What the index knows of a sample without decoding it."""

    key: str
    generator: str
    kind: str
    label: int
    has_mask: bool
    shard: str
    row: int


def _pixels(image) -> np.ndarray:
    """A writable HxWx3 uint8 copy of an RGB PIL image (as ``np.array`` gives, at a third of its cost)."""
    return np.asarray(image).copy()


@DATASETS.register_module()
class OpenSDIDataset(AbstractDataset):
    """OpenSDI rows from parquet shards (folder, file, glob, list or hub id) as Benco samples.

    ``generators``: names from the shard file names (``sd15 sd2 sdxl sd3 flux``), default all present.
    ``subset``: ``all`` or ``detection`` (every row) or ``localization`` (fake rows with a mask).
    ``on_error``: ``raise`` on a row whose bytes do not decode or whose mask size differs from its
    image, or ``skip`` to return the next good row instead and count the skips in a warning.
    The other parameters are Benco's ``AbstractDataset`` parameters.
    """

    def __init__(
        self,
        path: SourceLike,
        generators: Sequence[str] | str | None = None,
        subset: str = "all",
        is_padding: bool = False,
        is_resizing: bool = False,
        output_size: tuple[int, int] = (1024, 1024),
        common_transforms=None,
        edge_width: int | None = None,
        post_funcs=None,
        on_error: str = "raise",
    ) -> None:
        if bool(is_padding) == bool(is_resizing):
            raise OpenSDIError("set exactly one of is_padding and is_resizing to True")
        if subset not in SUBSETS:
            raise OpenSDIError(f"unknown subset {subset!r}; choose one of {', '.join(SUBSETS)}")
        if on_error not in ON_ERROR:
            raise OpenSDIError(f"on_error must be one of {', '.join(ON_ERROR)}, not {on_error!r}")
        if edge_width is not None and (int(edge_width) != edge_width or edge_width < 1 or edge_width % 2 == 0):
            raise OpenSDIError(f"edge_width must be a positive odd integer (Benco's rule), not {edge_width!r}")
        self._wanted_generators = [generators] if isinstance(generators, str) else generators
        self._subset = subset
        self.on_error = on_error
        self.edge_width = edge_width
        self.skipped = 0
        super().__init__(
            path,
            is_padding=is_padding,
            is_resizing=is_resizing,
            output_size=output_size,
            common_transforms=common_transforms,
            edge_width=edge_width,
            post_funcs=post_funcs,
        )
        self._reader = RowReader(self._index.shards)

    def _init_dataset_path(self, path: SourceLike):
        self.entry_path = str(path)
        shards = find_shards(path, self._wanted_generators)
        self._index = ShardIndex.build(shards).subset(self._subset)
        return self._index.keys, self._index.has_mask

    def __len__(self) -> int:
        return len(self._index)

    def __str__(self) -> str:
        return (
            f"[OpenSDIDataset] at {self.entry_path}, generators {', '.join(self.generators)}, "
            f"subset {self._subset}, with length of {len(self):,}"
        )

    def select(self, keep: np.ndarray) -> OpenSDIDataset:
        """A copy over the samples where the boolean array ``keep`` is true, in order (e.g. the
        rows held out for validation, or all the others), with settings shared and a reader of its own."""
        keep = np.asarray(keep, dtype=bool)
        if keep.shape != (len(self),):
            raise OpenSDIError(f"select needs one boolean per sample ({len(self)}), got shape {keep.shape}")
        chosen = copy.copy(self)
        chosen._index = self._index.select(keep)
        chosen.tp_path, chosen.gt_path = chosen._index.keys, chosen._index.has_mask
        chosen._reader = RowReader(chosen._index.shards)
        return chosen

    @property
    def shard_paths(self) -> list[str]:
        """The parquet files this dataset reads."""
        return [shard.path for shard in self._index.shards]

    @property
    def generators(self) -> list[str]:
        """Generators of the shards this dataset reads, in the paper's order."""
        return generator_order([s.generator for s in self._index.shards])

    def key(self, index: int) -> str:
        """The shard key of sample ``index``, e.g. ``partial/sd15/fake/123.jpg``."""
        return self._index.key(self._position(index))

    def generator(self, index: int) -> str:
        """The generator of sample ``index`` (from its shard's file name)."""
        return self._index.shards[int(self._index.shard[self._position(index)])].generator

    def label(self, index: int) -> int:
        """The stored label of sample ``index``: 0 real, 1 fake (before any augmentation)."""
        return int(self._index.label[self._position(index)])

    def has_mask(self, index: int) -> bool:
        """Whether sample ``index`` stores a mask (the partial fakes do)."""
        return bool(self._index.has_mask[self._position(index)])

    def row_groups(self) -> np.ndarray:
        """Per sample, the number of the parquet row group that holds it (samples of one group share it)."""
        return self._index.row_groups()

    def keep_row_groups(self, count: int) -> None:
        """Let each process cache the bytes of up to ``count`` row groups (default 1), first opened
        dropped first: ``count`` times a row group's image and mask bytes per process, and about 0.6
        of a group more while one is read (``benchmarks/data_throughput.py`` measures it)."""
        self._reader.keep(count)

    def record(self, index: int) -> SampleRecord:
        """Key, generator, kind (entire/partial/other), label, mask presence, shard and row of a sample."""
        i = self._position(index)
        key = self._index.key(i)
        prefix = key.split("/", 1)[0]
        shard = self._index.shards[int(self._index.shard[i])]
        return SampleRecord(
            key=key,
            generator=shard.generator,
            kind=prefix if prefix in KINDS and "/" in key else OTHER_KIND,
            label=int(self._index.label[i]),
            has_mask=bool(self._index.has_mask[i]),
            shard=shard.path,
            row=int(self._index.row[i]),
        )

    def _position(self, index: int) -> int:
        i = operator.index(index)
        size = len(self)
        if i < 0:
            i += size
        if not 0 <= i < size:
            raise IndexError(f"index {index} out of range for {size} samples")
        return i

    def __getitem__(self, index: int) -> dict:
        first = self._position(index)
        size = len(self)
        for attempt in range(size):
            i = (first + attempt) % size
            try:
                image, mask, label = self._load(i)
            except OpenSDIError as error:
                if self.on_error == "raise":
                    raise
                self.skipped += 1
                warnings.warn(
                    f"skipped a bad sample ({error}); using the next one. "
                    f"{self.skipped} sample(s) skipped so far in this process",
                    RuntimeWarning,
                    stacklevel=2,
                )
                continue
            return self._sample(i, image, mask, label)
        raise OpenSDIError(f"none of the {size} samples of {self.entry_path} could be decoded")

    def _load(self, i: int) -> tuple[np.ndarray, np.ndarray | int, int]:
        """Image HxWx3 uint8, the mask (HxWx3 uint8, or the constant 0 or 255) and the label of row i."""
        label = int(self._index.label[i])
        with_mask = label == 1 and bool(self._index.has_mask[i])
        shard, group, row = self._index.location(i)
        image_bytes, mask_bytes = self._reader.read(shard, group, row, with_mask)
        key = self._index.key(i)
        shard_path = self._index.shards[shard].path
        image = decode_rgb(image_bytes, "image", key, shard_path)
        if not with_mask:
            return _pixels(image), 255 if label == 1 else 0, label
        mask = decode_rgb(mask_bytes, "mask", key, shard_path)
        if mask.size != image.size:
            raise OpenSDIError(
                f"the mask of key {key!r} in shard {shard_path} is {mask.size[0]}x{mask.size[1]} "
                f"but its image is {image.size[0]}x{image.size[1]}"
            )
        return _pixels(image), _pixels(mask), label

    def _sample(self, i: int, image: np.ndarray, mask: np.ndarray | int, label: int) -> dict:
        height, width = image.shape[:2]
        if self.common_transforms is not None:
            if not isinstance(mask, np.ndarray):
                mask = np.full((height, width, 3), mask, dtype=np.uint8)
            augmented = self.common_transforms(image=image, mask=mask)
            image, changed = augmented["image"], augmented["mask"]
            if changed is not mask:  # a crop may cut the manipulated region out: the label follows the mask
                label = 1 if changed.any() else 0
            mask = changed
        if isinstance(mask, np.ndarray):
            binary = binarize(mask)
        else:
            binary = np.full((height, width), 1 if mask else 0, dtype=np.uint8)
        tp_shape = image.shape[0:2]
        masks = [binary]
        if self.edge_width is not None:
            masks.append(edge_mask(binary, self.edge_width))
        out = self.post_transform(image=image, masks=masks)

        # Benco's dtypes: float64 mask, float32 edge. numpy casts: torch's threaded .to() is slower here.
        data = {}
        if self.edge_width is not None:
            data["edge_mask"] = torch.from_numpy(out["masks"][1].numpy()[None].astype(np.float32))
        data["image"] = out["image"]
        data["mask"] = torch.from_numpy(out["masks"][0].numpy()[None].astype(np.float64))
        data["label"] = label
        data["origin_shape"] = torch.tensor(tp_shape)
        data["shape"] = torch.tensor(self.output_size if self.is_resizing else tp_shape)
        data["name"] = self._index.key(i)
        if self.is_padding:
            shape_mask = torch.zeros_like(data["mask"])
            shape_mask[:, : tp_shape[0], : tp_shape[1]] = 1
            data["shape_mask"] = shape_mask
        self._apply_post_funcs(data)
        return data

    def _apply_post_funcs(self, data: dict) -> None:
        if self.post_funcs is None:
            return
        funcs = self.post_funcs if isinstance(self.post_funcs, list) else [self.post_funcs]
        for func in funcs:
            if not callable(func):
                raise NotImplementedError(f"post function {func!r} is not callable")
            func(data)
