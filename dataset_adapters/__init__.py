"""OpenSDI parquet shards for IMDLBenCo: a Benco dataset, a row-group shuffled training order,
export to Benco's layouts, synthetic shards.

Importing this package registers ``OpenSDIDataset`` in Benco's ``DATASETS``.
"""

from dataset_adapters.errors import OpenSDIError
from dataset_adapters.export import export_opensdi
from dataset_adapters.opensdi import OpenSDIDataset, SampleRecord
from dataset_adapters.rowgroup_sampler import RowGroupBatchSampler, RowGroupShuffleSampler
from dataset_adapters.shards import KNOWN_GENERATORS, find_shards, list_generators
from dataset_adapters.synthetic import DEMO_SAMPLE, write_opensdi_shard, write_synthetic_opensdi

__all__ = [
    "DEMO_SAMPLE",
    "KNOWN_GENERATORS",
    "OpenSDIDataset",
    "OpenSDIError",
    "RowGroupBatchSampler",
    "RowGroupShuffleSampler",
    "SampleRecord",
    "export_opensdi",
    "find_shards",
    "list_generators",
    "write_opensdi_shard",
    "write_synthetic_opensdi",
]
