"""Turn a ``--data_path`` into Benco datasets: OpenSDI shards, Benco Tp/Gt folders, JSON lists.

A folder with ``Tp`` and ``Gt`` is Benco's ``ManiDataset``, a ``.json`` file is Benco's
``JsonDataset``; anything else (a shard folder, parquet files, a glob, a hub id) is OpenSDI.
For testing, OpenSDI splits into one dataset per generator, and Benco data may be named
``NAME=PATH`` so that each path is one row of the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from torch.utils.data import Dataset

from imdlbenco_maskclip.errors import UserError


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

        return OpenSDIDataset(path, generators=list(generators) if generators else None, subset=subset, **options.benco_kwargs())
    if generators:
        raise UserError(f"--generators applies to OpenSDI shards, but {path} is a Benco {kind} dataset")
    from IMDLBenCo.datasets import JsonDataset, ManiDataset

    from imdlbenco_maskclip.compat import label_from_mask

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


def opensdi_generators(path: str) -> list[str]:
    """The generators whose shards are present at ``path``, in the protocol's order."""
    from dataset_adapters.shards import list_generators

    return list_generators(path)


def protocol_datasets(
    paths: Sequence[str], options: DatasetOptions, generators: Sequence[str] | None, subset: str = "all"
) -> dict[str, Dataset]:
    """One dataset per table row: per generator for OpenSDI, per path (or ``NAME=``) for Benco data."""
    datasets: dict[str, Dataset] = {}
    for entry in paths:
        name, path = split_named(entry)
        if kind_of(path) == "opensdi":
            wanted = list(generators) if generators else opensdi_generators(path)
            for generator in wanted:
                row = generator if name is None else f"{name}/{generator}"
                datasets[row] = open_dataset(path, options, [generator], subset)
        else:
            row = name or Path(path).expanduser().resolve().name or path
            if row in datasets:
                raise UserError(f"two test datasets are both called '{row}': name them with NAME=PATH")
            datasets[row] = open_dataset(path, options, None, subset)
    return datasets
