"""``benco predict --format parquet``: parts that read back with ``datasets`` and pyarrow, and
``--resume`` after an interrupted run."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.dataset
import pyarrow.parquet as pq
import pytest
from PIL import Image

from imdlbenco_maskclip import Predictor
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.inference import prediction_parts

COLUMNS = ["source", "key", "width", "height", "fake_probability", "manipulated_fraction", "mask", "error"]


@pytest.fixture(scope="module")
def inputs(opensdi_root, tmp_path_factory) -> list[str]:
    """Both sd2 shards (20 rows) and a folder of four photos of different sizes and a file that is
    not an image."""
    photos = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(0)
    for i, (height, width) in enumerate([(40, 56), (64, 64), (31, 77), (90, 20)]):
        Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(photos / f"photo{i}.png")
    (photos / "notes.jpg").write_text("not a picture\n")
    return [str(photos), *sorted(str(p) for p in (opensdi_root / "data").glob("sd2-*.parquet"))]


def predict(checkpoint: Path, inputs: list[str], output: Path, *flags: str) -> int:
    fixed = ["--device", "cpu", "--amp", "off", "--format", "parquet", "--output_dir", str(output)]
    return benco.main(["predict", "--checkpoint", str(checkpoint), *inputs, *fixed, *flags])


def rows_of(output: Path) -> list[dict]:
    return pq.read_table(output / "predictions").to_pylist()


@pytest.fixture(scope="module")
def straight(tiny_checkpoint, inputs, tmp_path_factory) -> Path:
    """One uninterrupted run, in parts of 7 rows."""
    output = tmp_path_factory.mktemp("straight")
    assert predict(tiny_checkpoint, inputs, output, "--part_size", "7", "--batch_size", "4") == 0
    return output


def test_parts_hold_one_row_per_input_and_read_back_with_pyarrow_and_datasets(
    straight, tiny_checkpoint, inputs, tmp_path
):
    import datasets

    parts = sorted(p.name for p in (straight / "predictions").iterdir())
    assert parts == [f"part-00000-{chunk:05d}.parquet" for chunk in range(4)]  # 25 rows in parts of 7
    rows = rows_of(straight)
    assert list(rows[0]) == COLUMNS
    assert len(rows) == 25 and len({(r["source"], r["key"]) for r in rows}) == 25
    photos = Path(inputs[0])
    bad = next(r for r in rows if r["key"] == "notes.jpg")
    assert bad["source"] == str(photos / "notes.jpg") and "not an image" in bad["error"]
    assert bad["mask"] is None and bad["fake_probability"] is None

    predictor = Predictor.from_checkpoint(tiny_checkpoint, device="cpu", amp="off")
    alone = predictor.predict(photos / "photo2.png")
    row = next(r for r in rows if r["key"] == "photo2.png")
    assert (row["width"], row["height"], row["error"]) == (77, 31, None)
    assert row["fake_probability"] == pytest.approx(alone.fake_probability, abs=1e-5)
    assert row["manipulated_fraction"] == pytest.approx(float((alone.mask > 0.5).mean()), abs=0.01)
    mask = np.asarray(Image.open(io.BytesIO(row["mask"]["bytes"])))
    assert mask.shape == (31, 77) and np.abs(mask.astype(int) - np.asarray(alone.mask_image(), int)).max() <= 1
    assert {r["source"] for r in rows if r["key"].startswith(("entire/", "partial/"))} == set(inputs[1:])

    facts = json.loads(pq.read_schema(straight / "predictions" / parts[0]).metadata[b"imdlbenco_maskclip"])
    sha256 = hashlib.sha256(Path(tiny_checkpoint).read_bytes()).hexdigest()
    assert facts["source"] == {"checkpoint": str(tiny_checkpoint), "sha256": sha256}
    assert facts["precision"] == predictor.precision == "float32" and facts["threshold"] == predictor.threshold == 0.5
    assert (facts["model"], facts["image_size"], facts["padding"], facts["masks"]) == ("MaskCLIP", 64, False, "png")

    table = pyarrow.dataset.dataset(straight / "predictions").to_table(columns=["source", "key", "fake_probability"])
    assert table.num_rows == 25 and table.column_names == ["source", "key", "fake_probability"]
    loaded = datasets.load_dataset(
        "parquet", data_dir=str(straight / "predictions"), split="train", cache_dir=str(tmp_path / "hf")
    )
    assert isinstance(loaded.features["mask"], datasets.Image) and loaded.num_rows == 25
    first = next(r for r in loaded if r["key"] == "photo2.png")
    assert first["mask"].size == (77, 31) and first["fake_probability"] == row["fake_probability"]


def test_masks_none_leaves_the_column_out(tiny_checkpoint, inputs, tmp_path):
    assert predict(tiny_checkpoint, inputs[:1], tmp_path, "--masks", "none") == 0
    table = pq.read_table(tmp_path / "predictions")
    assert table.column_names == [c for c in COLUMNS if c != "mask"] and table.num_rows == 5
    features = json.loads(table.schema.metadata[b"huggingface"])["info"]["features"]
    assert list(features) == table.column_names


def test_resume_refuses_other_weights_at_the_same_path(tiny_checkpoint, inputs, tmp_path, capsys):
    """A checkpoint overwritten by a later run (here: the same weights saved again with another
    epoch) is other weights: its parts do not mix with the earlier ones."""
    import torch

    from imdlbenco_maskclip.checkpoints.layout import save_atomic

    checkpoint = tmp_path / "checkpoint-best.pth"
    shutil.copy(tiny_checkpoint, checkpoint)
    assert predict(checkpoint, inputs[:1], tmp_path / "out", "--masks", "none", "--part_size", "2") == 0
    save_atomic({**torch.load(tiny_checkpoint, weights_only=False), "epoch": 7}, checkpoint)
    assert predict(checkpoint, inputs[:1], tmp_path / "out", "--masks", "none", "--resume") == 2
    assert "was written by another setting (source: " in capsys.readouterr().err


def test_resume_predicts_what_a_killed_run_left_and_nothing_twice(straight, tiny_checkpoint, inputs, tmp_path, capsys):
    """A run killed in its third part leaves two complete parts and a temporary; resumed, with
    another batch size and part size, it gives the uninterrupted run's rows, each once."""
    folder = tmp_path / "predictions"
    folder.mkdir()
    for chunk in (0, 1):
        shutil.copy(straight / "predictions" / f"part-00000-{chunk:05d}.parquet", folder)
    stale = folder / ".part-00000-00002.parquet.tmp-4242"
    stale.write_bytes((straight / "predictions" / "part-00000-00002.parquet").read_bytes()[:300])

    assert predict(tiny_checkpoint, inputs, tmp_path, "--part_size", "3") == 2
    assert "pass --resume to continue it" in capsys.readouterr().err
    assert predict(tiny_checkpoint, inputs, tmp_path, "--resume", "--amp", "bf16") == 2
    assert "precision: 'float32' there, 'bfloat16' now" in capsys.readouterr().err
    assert predict(tiny_checkpoint, inputs, tmp_path, "--resume", "--threshold", "0.3") == 2
    refused = capsys.readouterr().err
    assert "threshold: 0.5 there, 0.3 now" in refused and "--threshold and --masks" in refused
    assert predict(tiny_checkpoint, inputs[:1], tmp_path, "--resume") == 2
    assert "not among INPUTS" in capsys.readouterr().err

    assert predict(tiny_checkpoint, inputs, tmp_path, "--resume", "--part_size", "5", "--batch_size", "3") == 0
    assert "11 images predicted, 0 skipped, 14 predicted before (--resume)" in capsys.readouterr().out
    assert not stale.exists() and not prediction_parts.temporaries(folder)
    assert sorted(p.name for p in folder.iterdir())[2:] == [
        "part-00000-00002.parquet",
        "part-00000-00003.parquet",
        "part-00000-00004.parquet",
    ]
    resumed = {(r["source"], r["key"]): r for r in rows_of(tmp_path)}
    reference = {(r["source"], r["key"]): r for r in rows_of(straight)}
    assert len(rows_of(tmp_path)) == len(resumed) == 25 and resumed.keys() == reference.keys()
    for identity, row in reference.items():
        assert resumed[identity]["fake_probability"] == pytest.approx(row["fake_probability"], abs=1e-5)

    assert predict(tiny_checkpoint, inputs, tmp_path, "--resume") == 0  # nothing left: nothing written
    assert len(rows_of(tmp_path)) == 25


def test_resume_is_for_the_parquet_format(tiny_checkpoint, inputs, tmp_path, capsys):
    status = benco.main(
        ["predict", "--checkpoint", str(tiny_checkpoint), inputs[0], "--resume", "--output_dir", str(tmp_path)]
    )
    assert status == 2 and "--resume continues a --format parquet run" in capsys.readouterr().err
