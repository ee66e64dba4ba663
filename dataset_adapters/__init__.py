"""OpenSDI parquet shards for IMDLBenCo: a Benco dataset, a row-group shuffled training order,
export to Benco's layouts, synthetic shards, fingerprints of test data.

A layer below ``imdlbenco_maskclip``: it imports nothing from it (an import-linter contract
checks this). ``OpenSDIDataset`` enters Benco's ``DATASETS`` when ``dataset_adapters.opensdi`` is
imported, which ``import imdlbenco_maskclip`` arranges as soon as IMDLBenCo is imported. The
names below load on first use, so that light users (the ``benco`` command's help,
``dataset_adapters.vocabulary``) import neither torch nor IMDLBenCo.
"""

from importlib import import_module
from typing import Any

_LAZY = {
    "DEMO_SAMPLE": "dataset_adapters.synthetic",
    "KNOWN_GENERATORS": "dataset_adapters.vocabulary",
    "OpenSDIDataset": "dataset_adapters.opensdi",
    "OpenSDIError": "dataset_adapters.errors",
    "RowGroupBatchSampler": "dataset_adapters.rowgroup_sampler",
    "RowGroupShuffleSampler": "dataset_adapters.rowgroup_sampler",
    "SampleRecord": "dataset_adapters.opensdi",
    "export_opensdi": "dataset_adapters.export",
    "file_list_fingerprint": "dataset_adapters.fingerprint",
    "find_shards": "dataset_adapters.shards",
    "list_generators": "dataset_adapters.shards",
    "shard_fingerprint": "dataset_adapters.fingerprint",
    "write_opensdi_shard": "dataset_adapters.synthetic",
    "write_synthetic_opensdi": "dataset_adapters.synthetic",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dataset_adapters' has no attribute '{name}'")
