"""Turn a ``--data_path`` into Benco datasets: OpenSDI shards, Benco Tp/Gt folders, JSON lists.

A folder with ``Tp`` and ``Gt`` is Benco's ``ManiDataset``, a ``.json`` file is Benco's
``JsonDataset``; anything else (a shard folder, parquet files, a glob, a hub id) is OpenSDI.
For testing, OpenSDI splits into one dataset per generator, and Benco data may be named
``NAME=PATH`` so that each path is one row of the table. ``hold_out`` splits a training set
into the rows trained on and a validation set that is never trained on. ``fingerprint`` says
which files a dataset reads (``dataset_adapters.fingerprint``), for the results to record.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset

from imdlbenco_maskclip.common.errors import UserError


@dataclass(frozen=True)
class DatasetOptions:
    """What every dataset of a run shares: geometry, edge width, augmentation, post-function."""

    image_size: int
    padding: bool = False
    edge_width: int | None = None
    transforms: Any = None
    post_funcs: Any = None

    def benco_kwargs(self) -> dict[str, Any]:
        return dict(
            is_padding=self.padding,
            is_resizing=not self.padding,
            output_size=(self.image_size, self.image_size),
            common_transforms=self.transforms,
            edge_width=self.edge_width,
            post_funcs=self.post_funcs,
        )


def kind_of(path: str) -> str:
    """``mani`` (Tp/Gt folder), ``json`` (Benco JSON list) or ``opensdi``."""
    candidate = Path(path).expanduser()
    if candidate.is_dir() and (candidate / "Tp").is_dir() and (candidate / "Gt").is_dir():
        return "mani"
    if candidate.suffix.lower() == ".json":
        if not candidate.is_file():
            raise UserError(f"no JSON list at {candidate}")
        return "json"
    return "opensdi"


def open_dataset(
    path: str, options: DatasetOptions, generators: Sequence[str] | None = None, subset: str = "all"
) -> Dataset:
    """One dataset for ``path``; ``generators`` and ``subset`` apply to OpenSDI only."""
    kind = kind_of(path)
    if kind == "opensdi":
        from dataset_adapters import OpenSDIDataset

        return OpenSDIDataset(
            path, generators=list(generators) if generators else None, subset=subset, **options.benco_kwargs()
        )
    if generators:
        raise UserError(f"--generators applies to OpenSDI shards, but {path} is a Benco {kind} dataset")
    from IMDLBenCo.datasets import JsonDataset, ManiDataset

    from imdlbenco_maskclip.host.workarounds import label_from_mask

    cls = ManiDataset if kind == "mani" else JsonDataset
    kwargs = {**options.benco_kwargs(), "common_transforms": label_from_mask(options.transforms)}
    try:
        return cls(str(Path(path).expanduser()), **kwargs)
    except (AssertionError, TypeError) as error:
        raise UserError(f"cannot read {path} as a Benco {kind} dataset: {error}") from None


def split_named(entry: str) -> tuple[str | None, str]:
    """``NAME=PATH`` -> (NAME, PATH); a bare path has no name."""
    name, sep, path = entry.partition("=")
    if sep and name and "/" not in name and not Path(entry).exists():
        return name, path
    return None, entry


def resolved(path: str) -> str:
    """A local data path made absolute (so it compares from any folder); a hub id as written."""
    candidate = Path(path).expanduser()
    return str(candidate.resolve()) if candidate.exists() else path


def same_data(a: str, b: str) -> bool:
    """Whether two data paths name the same data (hub ids compare as written)."""
    return resolved(a) == resolved(b)


def protocol_datasets(
    paths: Sequence[str], options: DatasetOptions, generators: Sequence[str] | None, subset: str = "all"
) -> dict[str, Dataset]:
    """One dataset per table row: per generator for OpenSDI, per path (or ``NAME=``) for Benco data."""
    from dataset_adapters.shards import list_generators

    datasets: dict[str, Dataset] = {}
    for entry in paths:
        name, path = split_named(entry)
        if kind_of(path) == "opensdi":
            wanted = list(generators) if generators else list_generators(path)
            for generator in wanted:
                row = generator if name is None else f"{name}/{generator}"
                datasets[row] = open_dataset(path, options, [generator], subset)
        else:
            row = name or Path(path).expanduser().resolve().name or path
            if row in datasets:
                raise UserError(f"two test datasets are both called '{row}': name them with NAME=PATH")
            datasets[row] = open_dataset(path, options, None, subset)
    return datasets


def fingerprint(dataset: Dataset) -> dict[str, Any]:
    """Which files ``dataset`` reads: an OpenSDI dataset's shards (name, size, footer digest,
    hub revision), a Benco dataset's image and mask files (a digest of names and sizes)."""
    from dataset_adapters import OpenSDIDataset
    from dataset_adapters.fingerprint import file_list_fingerprint, shard_fingerprint

    if isinstance(dataset, OpenSDIDataset):
        return shard_fingerprint(dataset.shard_paths)
    return file_list_fingerprint(
        (f"{role}/{Path(str(path)).name}", str(path))
        for role, paths in (("Tp", dataset.tp_path), ("Gt", dataset.gt_path))
        for path in paths
        if path != "Negative"
    )


@dataclass(frozen=True)
class HeldOut:
    """A training set split by name hash: the rows trained on and the validation images.

    ``validation`` is the held-out partial fakes (OpenSDI: fake rows with a mask; Benco data:
    rows with a Gt mask), where pixel F1 means something; None when there are none.
    """

    train: Dataset
    validation: Dataset | None
    held_out: int
    total: int
    source: str

    @property
    def description(self) -> str:
        """E.g. ``2,008 of 200,824 sd15 rows held out``."""
        return f"{self.held_out:,} of {self.total:,} {self.source} rows held out"


def is_held_out(names: Sequence[str], fraction: float) -> np.ndarray:
    """True for the names whose BLAKE2b hash falls in the lowest ``fraction`` of its range: the
    same rows in every run, process and resume, whatever the order of the rows or PYTHONHASHSEED."""
    threshold = int(fraction * 2**64)
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(n.encode("utf-8"), digest_size=8).digest(), "big") < threshold for n in names),
        dtype=bool,
        count=len(names),
    )


def hold_out(dataset: Dataset, fraction: float, validation_transforms: Any = None) -> HeldOut:
    """Split an OpenSDI dataset by shard key, a Benco ``ManiDataset``/``JsonDataset`` by file name;
    the validation images get ``validation_transforms`` instead of the training augmentations."""
    if not 0.0 < fraction < 1.0:
        raise UserError(f"--val_fraction {fraction}: must be between 0 and 1")
    from dataset_adapters import OpenSDIDataset

    if isinstance(dataset, OpenSDIDataset):
        held = is_held_out(dataset.tp_path.to_pylist(), fraction)
        positions = np.flatnonzero(held)
        partial_fake = np.zeros(len(dataset), dtype=bool)
        partial_fake[positions] = [dataset.label(int(i)) == 1 and dataset.has_mask(int(i)) for i in positions]
        train, validation = dataset.select(~held), dataset.select(partial_fake)
        source = " ".join(dataset.generators)
    else:
        held = is_held_out([Path(str(p)).name for p in dataset.tp_path], fraction)
        with_mask = np.array([g != "Negative" for g in dataset.gt_path], dtype=bool)
        train, validation = _select_benco(dataset, ~held), _select_benco(dataset, held & with_mask)
        source = Path(str(dataset.entry_path)).name
    if len(train) == 0:
        raise UserError(f"--val_fraction {fraction} holds out every row of {dataset}")
    if isinstance(dataset, OpenSDIDataset):
        validation.common_transforms = validation_transforms
    else:
        from imdlbenco_maskclip.host.workarounds import label_from_mask

        validation.common_transforms = label_from_mask(validation_transforms)
    return HeldOut(train, validation if len(validation) else None, int(held.sum()), len(dataset), source)


def _select_benco(dataset: Dataset, keep: np.ndarray) -> Dataset:
    """A copy of a Benco dataset over the rows where ``keep`` is true (its rows are two path lists)."""
    chosen = copy.copy(dataset)
    chosen.tp_path = [p for p, k in zip(dataset.tp_path, keep) if k]
    chosen.gt_path = [p for p, k in zip(dataset.gt_path, keep) if k]
    return chosen
