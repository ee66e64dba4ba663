"""What real shards can hold that the first synthetic ones did not: class ids in another order
(read from the ClassLabel names ``datasets`` keeps in the parquet metadata), and a mask struct
with a path but no bytes (no mask: a fake without one is wholly generated)."""

from __future__ import annotations

import io
from pathlib import Path

import datasets
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dataset_adapters import OpenSDIDataset, OpenSDIError


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _write(root: Path, names: list[str], rows: list[dict]) -> Path:
    features = datasets.Features(
        {
            "key": datasets.Value("string"),
            "image": datasets.Image(),
            "mask": datasets.Image(),
            "label": datasets.ClassLabel(names=names),
        }
    )
    columns = {name: [row[name] for row in rows] for name in ("key", "image", "mask", "label")}
    path = root / "data" / "sd3-00000-of-00001.parquet"
    path.parent.mkdir(parents=True)
    datasets.Dataset.from_dict(columns, features=features).to_parquet(str(path))
    return path


IMAGE = {"bytes": _png(np.full((32, 32, 3), 120, np.uint8)), "path": None}
MASK = np.zeros((32, 32, 3), np.uint8)
MASK[8:20, 8:20] = 255


def test_labels_follow_the_class_names_not_their_ids(tmp_path):
    _write(
        tmp_path,
        ["fake", "real"],
        [
            {"key": "partial/sd3/fake/1.png", "image": IMAGE, "mask": {"bytes": _png(MASK), "path": None}, "label": 0},
            {"key": "entire/sd3/real/2.png", "image": IMAGE, "mask": None, "label": 1},
        ],
    )
    dataset = OpenSDIDataset(tmp_path, is_resizing=True, output_size=(32, 32))
    assert [dataset.label(0), dataset.label(1)] == [1, 0]
    assert dataset[0]["label"] == 1 and dataset[0]["mask"].sum() == 12 * 12
    assert dataset[1]["label"] == 0 and dataset[1]["mask"].sum() == 0


def test_class_names_without_real_and_fake_are_an_error_naming_the_file(tmp_path):
    path = _write(tmp_path, ["authentic", "tampered"], [{"key": "a.png", "image": IMAGE, "mask": None, "label": 0}])
    with pytest.raises(OpenSDIError, match="authentic, tampered") as caught:
        OpenSDIDataset(tmp_path, is_resizing=True, output_size=(32, 32))
    assert str(path) in str(caught.value)


def test_a_mask_struct_without_bytes_is_no_mask(tmp_path):
    """Row 0's mask struct keeps its path but loses its bytes (``datasets`` would embed the file,
    so the cell is rewritten with pyarrow, keeping the schema and its metadata)."""
    path = _write(
        tmp_path,
        ["real", "fake"],
        [
            {"key": "entire/sd3/fake/1.png", "image": IMAGE, "mask": {"bytes": _png(MASK), "path": None}, "label": 1},
            {"key": "partial/sd3/fake/2.png", "image": IMAGE, "mask": {"bytes": _png(MASK), "path": None}, "label": 1},
        ],
    )
    table = pq.read_table(path)
    mask_type = table.schema.field("mask").type
    masks = pa.array(
        [{"bytes": None, "path": "masks/1.png"}, {"bytes": _png(MASK), "path": "masks/2.png"}], type=mask_type
    )
    pq.write_table(table.set_column(table.schema.get_field_index("mask"), "mask", masks), path)
    assert pq.read_schema(path).metadata[b"huggingface"]
    dataset = OpenSDIDataset(tmp_path, is_resizing=True, output_size=(32, 32))
    assert [dataset.has_mask(0), dataset.has_mask(1)] == [False, True]
    assert dataset[0]["mask"].min() == 1  # a fake without a mask is wholly generated
    assert dataset[1]["mask"].sum() == 12 * 12
