"""Synthetic shards: the real HF parquet format, deterministic, odd inputs included, and edits that
leave a local trace (missing sensor noise) that is strongest for sd15 and weakest for flux."""

from __future__ import annotations

import io
import json
from pathlib import Path

import cv2
import numpy as np
import pyarrow.parquet as pq
from PIL import Image

from dataset_adapters import write_synthetic_opensdi

EXPECTED_FEATURES = {
    "key": {"dtype": "string", "_type": "Value"},
    "image": {"_type": "Image"},
    "mask": {"_type": "Image"},
    "label": {"names": ["real", "fake"], "_type": "ClassLabel"},
}


def _rows(root, generator: str) -> list[dict]:
    return [r for s in sorted((root / "data").glob(f"{generator}-*.parquet")) for r in pq.read_table(s).to_pylist()]


def _decode(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_schema_and_metadata_are_hugging_face_parquet(opensdi_root):
    shards = sorted(p.name for p in (opensdi_root / "data").glob("*.parquet"))
    assert shards == sorted(
        f"{g}-0000{i}-of-00002.parquet" for g in ("sd15", "sd2", "sdxl", "sd3", "flux") for i in (0, 1)
    )
    parquet = pq.ParquetFile(opensdi_root / "data" / "sd15-00000-of-00002.parquet")
    schema = parquet.schema_arrow
    assert [str(t) for t in schema.types] == [
        "string",
        "struct<bytes: binary, path: string>",
        "struct<bytes: binary, path: string>",
        "int64",
    ]
    assert schema.names == ["key", "image", "mask", "label"]
    assert json.loads(schema.metadata[b"huggingface"])["info"]["features"] == EXPECTED_FEATURES
    assert parquet.metadata.num_rows == 12 and parquet.metadata.num_row_groups == 3


def test_datasets_reads_them_with_image_features(opensdi_root, tmp_path):
    import datasets

    files = [str(opensdi_root / "data" / "flux-00001-of-00002.parquet")]
    loaded = datasets.load_dataset("parquet", data_files=files, split="train", cache_dir=str(tmp_path))
    assert loaded.features["label"].names == ["real", "fake"]
    assert isinstance(loaded.features["image"], datasets.Image) and isinstance(loaded.features["mask"], datasets.Image)
    row = loaded[0]
    assert isinstance(row["image"], Image.Image) and row["key"].startswith(("entire/flux/", "partial/flux/"))


def test_contents_keys_modes_and_sizes(opensdi_root):
    rows = _rows(opensdi_root, "sd15")
    assert len(rows) == 20
    kinds = {}
    for row in rows:
        kind, generator, label_name, name = row["key"].split("/")
        assert generator == "sd15" and row["label"] == (label_name == "fake")
        kinds[(kind, label_name)] = kinds.get((kind, label_name), 0) + 1
        assert (row["mask"] is not None) == (kind == "partial" and label_name == "fake")
        image = _decode(row["image"]["bytes"])
        assert image.format == ("PNG" if name.endswith(".png") else "JPEG")
        if row["mask"] is not None:
            assert _decode(row["mask"]["bytes"]).size == image.size
    assert kinds == {("entire", "real"): 5, ("entire", "fake"): 5, ("partial", "real"): 5, ("partial", "fake"): 5}
    modes = {_decode(r["image"]["bytes"]).mode for r in rows}
    mask_modes = {_decode(r["mask"]["bytes"]).mode for r in rows if r["mask"]}
    sizes = {_decode(r["image"]["bytes"]).size for r in rows}
    assert {"L", "RGBA", "P", "RGB"} <= modes and {"L", "RGB"} <= mask_modes
    assert any(w % 16 or h % 16 for w, h in sizes) and any(w != h for w, h in sizes)


def test_same_arguments_same_bytes(tmp_path):
    first = write_synthetic_opensdi(tmp_path / "a", generators=("sd3",), n_per_class=2, image_size=40, seed=5)
    second = write_synthetic_opensdi(tmp_path / "b", generators=("sd3",), n_per_class=2, image_size=40, seed=5)
    other = write_synthetic_opensdi(tmp_path / "c", generators=("sd3",), n_per_class=2, image_size=40, seed=6)
    assert [Path(p).read_bytes() for p in first] == [Path(p).read_bytes() for p in second]
    assert Path(first[0]).read_bytes() != Path(other[0]).read_bytes()


def test_a_new_generator_gets_its_own_trace_from_its_name():
    from dataset_adapters.synthetic import TRACES, trace_of

    assert trace_of("sd3") is TRACES["sd3"]
    assert trace_of("dalle") == trace_of("dalle") != trace_of("sd35")
    assert trace_of("dalle").grid == TRACES["flux"].grid


def _noise(image: np.ndarray) -> np.ndarray:
    grey = image.astype(np.float32).mean(axis=2)
    return np.abs(grey - cv2.GaussianBlur(grey, (0, 0), 1.0))


def _trace_strength(rows: list[dict]) -> float:
    """Mean ratio of high-frequency energy outside the edited region to inside it, over partial fakes."""
    ratios = []
    for row in rows:
        if row["mask"] is None:
            continue
        image = np.array(_decode(row["image"]["bytes"]).convert("RGB"))
        mask = np.array(_decode(row["mask"]["bytes"]).convert("RGB")).mean(axis=2) > 127.5
        coverage = mask.mean()
        assert 0.08 <= coverage <= 0.45, row["key"]
        inner = cv2.erode(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        outer = cv2.dilate(mask.astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        noise = _noise(image)
        ratios.append(noise[outer].mean() / noise[inner].mean())
    return float(np.mean(ratios))


def test_edits_lack_the_sensor_noise_sd15_most_flux_least(opensdi_root):
    strength = {g: _trace_strength(_rows(opensdi_root, g)) for g in ("sd15", "flux")}
    assert strength["sd15"] > 1.5
    assert strength["flux"] > 1.05
    assert strength["sd15"] > strength["flux"]
