"""Data fingerprints: parquet footers digested without reading image bytes, image files by
names and sizes, hub revisions from the cache path; the same files anywhere give the same one."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dataset_adapters import OpenSDIError
from dataset_adapters.fingerprint import footer_digest, shard_fingerprint
from dataset_adapters.synthetic import write_synthetic_opensdi
from imdlbenco_maskclip.host.datasets import DatasetOptions, fingerprint, open_dataset

REVISION = "0123456789abcdef0123456789abcdef01234567"


def shards(root) -> list[str]:
    return sorted(str(p) for p in (root / "data").glob("*.parquet"))


def first_images(path) -> pa.Table | None:
    """The image column of the first row group; None once its pages no longer decode."""
    try:
        return pq.ParquetFile(path).read_row_group(0, columns=["image"])
    except (OSError, pa.ArrowException):
        return None


def test_the_same_shards_anywhere_give_the_same_fingerprint(opensdi_root, tmp_path):
    here = shard_fingerprint(shards(opensdi_root))
    snapshot = tmp_path / "datasets--nebula--OpenSDI_test" / "snapshots" / REVISION
    shutil.copytree(opensdi_root / "data", snapshot / "data")
    there = shard_fingerprint(shards(snapshot))
    assert there["sha256"] == here["sha256"] and there["files"] == here["files"]
    assert there["revision"] == REVISION and "revision" not in here
    assert [f["name"] for f in here["files"]] == sorted(p.rsplit("/", 1)[1] for p in shards(opensdi_root))


def test_the_footer_is_read_without_the_image_bytes(opensdi_root, tmp_path):
    """Bytes inside the first row group (image data) overwritten: the footer digest is unchanged,
    so they were never part of it; one row less in a shard changes it."""
    path = tmp_path / "sd15-00000-of-00001.parquet"
    shutil.copy(shards(opensdi_root)[0], path)
    before = footer_digest(str(path))
    images = pq.ParquetFile(path).metadata.row_group(0).column(1)
    assert images.path_in_schema == "image.bytes" and images.total_compressed_size > 1024
    intact = first_images(path)
    with open(path, "r+b") as handle:
        handle.seek(images.data_page_offset + 256)
        handle.write(b"\0" * 256)
    assert footer_digest(str(path)) == before
    assert first_images(path) != intact

    table = pq.read_table(shards(opensdi_root)[0])
    fewer = tmp_path / "fewer.parquet"
    pq.write_table(table.slice(1), fewer)
    same = tmp_path / "same.parquet"
    pq.write_table(table, same)
    assert footer_digest(str(fewer)) != footer_digest(str(same))


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"not a parquet file at all")
    with pytest.raises(OpenSDIError, match="bad.parquet is not a parquet file"):
        footer_digest(str(bad))


def test_benco_folders_are_known_by_names_and_sizes(mani_export, tmp_path):
    options = DatasetOptions(32)
    original = fingerprint(open_dataset(str(mani_export), options))
    shutil.copytree(mani_export, tmp_path / "copy")
    assert fingerprint(open_dataset(str(tmp_path / "copy"), options)) == original
    assert original["files"] == len(list((tmp_path / "copy" / "Tp").iterdir())) + len(
        list((tmp_path / "copy" / "Gt").iterdir())
    )
    first = sorted((tmp_path / "copy" / "Tp").iterdir())[0]
    first.rename(first.with_name("renamed" + first.suffix))
    assert fingerprint(open_dataset(str(tmp_path / "copy"), options))["sha256"] != original["sha256"]


def test_opensdi_datasets_fingerprint_their_generators_shards(tmp_path):
    write_synthetic_opensdi(tmp_path, generators=("sd15", "flux"), n_per_class=2, image_size=32)
    dataset = open_dataset(str(tmp_path), DatasetOptions(32), ["flux"])
    assert [f["name"] for f in fingerprint(dataset)["files"]] == ["flux-00000-of-00001.parquet"]
