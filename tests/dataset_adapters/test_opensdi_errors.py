"""Odd and bad input: every PIL mode reads as Benco reads it, and each fault is an OpenSDIError that
names the key and shard, or the file and what it lacks."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from IMDLBenCo.datasets import JsonDataset, ManiDataset
from PIL import Image

from dataset_adapters import OpenSDIDataset, OpenSDIError, export_opensdi, write_opensdi_shard
from dataset_adapters.export import file_stem


def _bytes(image: Image.Image, kind: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def _picture(width: int, height: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // (width - 1), yy * 255 // (height - 1), (3 * xx + yy) % 256], axis=2)
    return np.clip(base + rng.integers(-30, 31, base.shape), 0, 255).astype(np.uint8)


def _threshold_mask(width: int, height: int) -> Image.Image:
    """Channel sums 378..387 everywhere: the binarization threshold (sum >= 383) decides each pixel."""
    sums = 378 + (np.arange(width * height) % 10).reshape(height, width)
    red = np.minimum(sums // 3 + 1, 255)
    green = (sums - red) // 2
    blue = sums - red - green
    return Image.fromarray(np.stack([red, green, blue], axis=2).astype(np.uint8), "RGB")


@pytest.fixture(scope="module")
def modes_root(tmp_path_factory) -> Path:
    """A shard whose images and masks come in every PIL mode Benco may meet."""
    root = tmp_path_factory.mktemp("modes")
    rgb = Image.fromarray(_picture(45, 37, 0), "RGB")
    i16 = Image.fromarray(_picture(45, 37, 1)[:, :, 0].astype(np.uint16) * 257)
    assert i16.mode == "I;16"
    blob = np.zeros((37, 45), np.uint8)
    blob[8:30, 5:25] = 255
    rows = [
        ("partial/sd15/real/L.png", _bytes(rgb.convert("L")), None, 0),
        ("partial/sd15/fake/LA.png", _bytes(rgb.convert("LA")), _bytes(Image.fromarray(blob).convert("LA")), 1),
        ("partial/sd15/fake/P.png", _bytes(rgb.quantize(32)), _bytes(Image.fromarray(blob).convert("P")), 1),
        ("entire/sd15/fake/RGBA.png", _bytes(rgb.convert("RGBA")), None, 1),
        ("partial/sd15/fake/CMYK.jpg", _bytes(rgb.convert("CMYK"), "JPEG"), _bytes(_threshold_mask(45, 37)), 1),
        ("partial/sd15/real/I16.png", _bytes(i16), None, 0),
        ("partial/sd15/fake/1.png", _bytes(rgb.convert("1")), _bytes(Image.fromarray(blob, "L"), "JPEG"), 1),
        ("sd15/other.jpg", _bytes(rgb, "JPEG"), None, 0),
    ]
    write_opensdi_shard(root / "data" / "sd15-00000-of-00001.parquet", rows, rows_per_group=3)
    return root


def test_every_mode_reads_as_benco_reads_the_export(modes_root, tmp_path):
    kwargs = dict(is_padding=True, output_size=(48, 48), edge_width=3)
    ours = OpenSDIDataset(modes_root, **kwargs)
    mani = ManiDataset(export_opensdi(modes_root, tmp_path / "mani"), **kwargs)
    json_list = JsonDataset(export_opensdi(modes_root, tmp_path / "json", format="json"), **kwargs)
    position = {file_stem(ours.key(i)): i for i in range(len(ours))}
    assert len(mani) == len(ours) == len(json_list) == 8
    for j in range(len(mani)):
        sample = ours[position[os.path.basename(mani.tp_path[j]).split(".")[0]]]
        for benco in (mani[j], json_list[position[os.path.basename(mani.tp_path[j]).split(".")[0]]]):
            for name in ("image", "mask", "edge_mask", "shape_mask"):
                assert torch.equal(sample[name], benco[name]), (sample["name"], name)
        assert sample["image"].shape == (3, 48, 48)
    cmyk = ours[position[file_stem("partial/sd15/fake/CMYK.jpg")]]["mask"][0, :37, :45].numpy()
    expected = (378 + (np.arange(45 * 37) % 10).reshape(37, 45)) >= 383
    assert np.array_equal(cmyk, expected)


def _one_row_dataset(tmp_path: Path, rows, **kwargs) -> tuple[OpenSDIDataset, str]:
    path = write_opensdi_shard(tmp_path / "data" / "sd15-00000-of-00001.parquet", rows)
    return OpenSDIDataset(tmp_path, is_resizing=True, output_size=(32, 32), **kwargs), path


def test_mask_size_mismatch_names_key_and_shard(tmp_path):
    image = _bytes(Image.fromarray(_picture(40, 30, 2)), "JPEG")
    mask = _bytes(Image.new("RGB", (30, 40), (255, 255, 255)))
    dataset, shard = _one_row_dataset(tmp_path, [("partial/sd15/fake/7.jpg", image, mask, 1)])
    with pytest.raises(OpenSDIError) as error:
        dataset[0]
    message = str(error.value)
    assert "'partial/sd15/fake/7.jpg'" in message and shard in message and "30x40" in message and "40x30" in message


@pytest.mark.parametrize("what", ["image", "mask"])
def test_undecodable_bytes_name_key_and_shard(tmp_path, what):
    good = _bytes(Image.fromarray(_picture(40, 30, 3)), "JPEG")
    broken = good[: len(good) // 2]  # truncated JPEG: the header reads, the pixels do not
    image, mask = (broken, _bytes(Image.new("L", (40, 30), 255))) if what == "image" else (good, b"not an image")
    dataset, shard = _one_row_dataset(tmp_path, [("partial/sd15/fake/9.jpg", image, mask, 1)])
    with pytest.raises(
        OpenSDIError, match=f"cannot decode the {what} of key 'partial/sd15/fake/9.jpg' in shard"
    ) as error:
        dataset[0]
    assert shard in str(error.value)


def test_null_image_names_key(tmp_path):
    dataset, _shard = _one_row_dataset(tmp_path, [("entire/sd15/real/3.jpg", None, None, 0)])
    with pytest.raises(OpenSDIError, match="the image of key 'entire/sd15/real/3.jpg' in shard .* has no bytes"):
        dataset[0]


def test_skip_replaces_bad_samples_and_counts_them(tmp_path):
    good = _bytes(Image.fromarray(_picture(40, 30, 4)), "JPEG")
    rows = [
        ("entire/sd15/real/0.jpg", good, None, 0),
        ("entire/sd15/real/1.jpg", b"\xff\xd8 broken", None, 0),
        ("entire/sd15/fake/2.jpg", good, _bytes(Image.new("L", (10, 10))), 1),
        ("entire/sd15/real/3.jpg", good, None, 0),
    ]
    dataset, _ = _one_row_dataset(tmp_path, rows, on_error="skip")
    with pytest.warns(RuntimeWarning) as caught:
        assert dataset[1]["name"] == "entire/sd15/real/3.jpg"
    messages = [str(w.message) for w in caught]
    assert "key 'entire/sd15/real/1.jpg'" in messages[0] and "1 sample(s) skipped" in messages[0]
    assert "key 'entire/sd15/fake/2.jpg'" in messages[1] and "2 sample(s) skipped" in messages[1]
    assert dataset.skipped == 2
    strict, _ = _one_row_dataset(tmp_path / "strict", rows)
    with pytest.raises(OpenSDIError):
        strict[1]


def test_skip_gives_up_when_nothing_decodes(tmp_path):
    dataset, _ = _one_row_dataset(tmp_path, [("entire/sd15/real/0.jpg", b"junk", None, 0)], on_error="skip")
    with pytest.warns(RuntimeWarning), pytest.raises(OpenSDIError, match="none of the 1 samples"):
        dataset[0]


def test_decompression_bomb_guard_stays_on(tmp_path, monkeypatch):
    assert Image.MAX_IMAGE_PIXELS == 89478485  # importing the adapter left PIL's guard alone
    image = _bytes(Image.fromarray(_picture(40, 30, 5)), "PNG")
    dataset, _ = _one_row_dataset(tmp_path, [("entire/sd15/real/0.png", image, None, 0)])
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)
    with pytest.raises(OpenSDIError, match="DecompressionBombError"):
        dataset[0]


def test_not_parquet_names_the_file(tmp_path):
    bad = tmp_path / "data" / "sd15-00000-of-00001.parquet"
    bad.parent.mkdir()
    bad.write_text("this is not parquet")
    with pytest.raises(OpenSDIError, match="is not a readable parquet file") as error:
        OpenSDIDataset(tmp_path, is_resizing=True)
    assert str(bad) in str(error.value)


def test_missing_columns_are_named(tmp_path):
    path = tmp_path / "sd2-00000-of-00001.parquet"
    pq.write_table(pa.table({"key": ["a"], "label": [0], "img": [b"x"]}), path)
    with pytest.raises(OpenSDIError, match=r"lacks column\(s\) image, mask") as error:
        OpenSDIDataset(str(path), is_resizing=True)
    assert str(path) in str(error.value) and "found: key, label, img" in str(error.value)


def test_wrong_column_types_are_named(tmp_path):
    path = tmp_path / "sd2-00000-of-00001.parquet"
    pq.write_table(pa.table({"key": ["a"], "image": [b"x"], "mask": [None], "label": [0]}), path)
    with pytest.raises(OpenSDIError, match="column image is binary, not an image struct") as error:
        OpenSDIDataset(str(path), is_resizing=True)
    assert str(path) in str(error.value)


def test_bad_labels_are_named(tmp_path):
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    image = {"bytes": b"x", "path": None}
    table = pa.table(
        {
            "key": ["a", "b"],
            "image": pa.array([image, image], image_type),
            "mask": pa.array([None, None], image_type),
            "label": [0, 3],
        }
    )
    path = tmp_path / "sd2-00000-of-00001.parquet"
    pq.write_table(table, path)
    with pytest.raises(OpenSDIError, match="label 3 at row 1"):
        OpenSDIDataset(str(path), is_resizing=True)


def test_missing_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file, folder or hub dataset"):
        OpenSDIDataset(str(tmp_path / "nowhere" / "x.parquet"), is_resizing=True)
    with pytest.raises(OpenSDIError, match="no .parquet files under"):
        OpenSDIDataset(str(tmp_path), is_resizing=True)
    with pytest.raises(OpenSDIError, match="no files match"):
        OpenSDIDataset(str(tmp_path / "*.parquet"), is_resizing=True)


def test_hub_id_offline_says_how_to_download(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(OpenSDIError) as error:
        OpenSDIDataset("nebula/OpenSDI_test", generators=["sd15"], is_resizing=True)
    message = str(error.value)
    assert "huggingface-cli download nebula/OpenSDI_test --repo-type dataset --local-dir data/OpenSDI_test" in message
    assert "pass the folder" in message


def test_hub_id_resolves_from_the_cache(opensdi_root, tmp_path, monkeypatch):
    from huggingface_hub import constants

    repo = tmp_path / "cache" / "datasets--nebula--OpenSDI_test"
    snapshot = repo / "snapshots" / "0123abcd"
    (snapshot / "data").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    for shard in (opensdi_root / "data").glob("sd*-*.parquet"):
        (snapshot / "data" / shard.name).write_bytes(shard.read_bytes())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "cache"))
    dataset = OpenSDIDataset("nebula/OpenSDI_test", generators=["sdxl"], is_resizing=True, output_size=(32, 32))
    assert dataset.generators == ["sdxl"] and len(dataset) == 20
    assert dataset[0]["image"].shape == (3, 32, 32)
