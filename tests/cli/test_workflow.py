"""``benco train``, ``--resume``, ``benco test`` and ``benco predict`` end to end on synthetic shards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imdlbenco_maskclip.cli import benco

SIZE = 64
TINY = ["--model", "MaskCLIP", "--setting", "tiny"]
BASELINES = {
    "PSCC_Net": ["--pretrain_path", ""],
    "IML_ViT": ["--embed_dim", "96", "--fpn_channels", "32", "--mlp_embeding_dim", "32"],
}


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    """A training split (sd15) and held-out test splits (sd15, sd2) from other seeds."""
    from dataset_adapters.synthetic import write_synthetic_opensdi

    root = tmp_path_factory.mktemp("workflow")
    write_synthetic_opensdi(root / "train", generators=("sd15",), n_per_class=4, image_size=SIZE, seed=3)
    write_synthetic_opensdi(root / "test", generators=("sd15", "sd2"), n_per_class=2, image_size=SIZE, seed=4)
    return root


def train_args(shards: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "train",
        "--data_path",
        str(shards / "train"),
        "--test_data_path",
        str(shards / "test"),
        "--test_generators",
        "sd15",
        "--select_on",
        "test",
        "--image_size",
        str(SIZE),
        "--batch_size",
        "4",
        "--test_batch_size",
        "4",
        "--augment",
        "flips",
        "--edge_mask_width",
        "3",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--output_dir",
        str(output_dir),
        "--seed",
        "7",
        *extra,
    ]


def read_log(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.txt").read_text().splitlines()]


def test_maskclip_train_test_predict(shards, tmp_path, capsys):
    run = tmp_path / "run"
    assert benco.main(train_args(shards, run, "--epochs", "2", *TINY)) == 0
    assert {"checkpoint-last.pth", "checkpoint-best.pth", "log.txt"} <= {p.name for p in run.iterdir()}
    assert [r["epoch"] for r in read_log(run)] == [0, 1]
    assert "val_mean_pixel_f1" in read_log(run)[-1]
    assert (run / "tensorboard").is_dir()
    checkpoint = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert checkpoint["model_name"] == "MaskCLIP" and checkpoint["epoch"] == 1

    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoint-last.pth"),
                "--test_data_path",
                str(shards / "test"),
                "--image_size",
                str(SIZE),
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--compare-paper",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "MaskCLIP (paper, same model)" in out
    results = json.loads((run / "opensdi_results.json").read_text())
    assert [s["split"] for s in results["splits"]] == ["sd15", "sd2"]
    for split in results["splits"]:  # 2 per class x {entire, partial} x {real, fake}: nothing dropped
        assert split["n_images"] == 8 and split["n_real"] == 4 and split["n_pixel"] == 2
        assert 0.0 <= split["image_auc"] <= 1.0
    assert {"opensdi_results.md", "opensdi_results.csv", "per_image.csv"} <= {p.name for p in run.iterdir()}

    images = tmp_path / "photos"
    images.mkdir()
    for i, size in enumerate([(40, 56), (SIZE, SIZE)]):
        Image.fromarray(np.full((*size, 3), 60 * i, np.uint8)).save(images / f"photo{i}.png")
    shard = sorted((shards / "test" / "data").glob("sd2-*.parquet"))[0]
    preds = tmp_path / "preds"
    assert (
        benco.main(
            [
                "predict",
                "--checkpoint",
                str(run / "checkpoint-best.pth"),
                str(images),
                str(shard),
                "--image_size",
                str(SIZE),
                "--device",
                "cpu",
                "--output_dir",
                str(preds),
            ]
        )
        == 0
    )
    rows = json.loads((preds / "predictions.json").read_text())
    assert len(rows) == 2 + 8
    assert all(0.0 <= r["fake_probability"] <= 1.0 for r in rows)
    first = next(r for r in rows if r["name"] == "photo0.png")
    assert Image.open(preds / first["mask"]).size == (56, 40)  # original size, W x H
    assert len(list((preds / "overlays").glob("*.png"))) == len(rows)


@pytest.mark.slow  # a long run
def test_interrupted_run_resumes_to_the_same_weights(shards, tmp_path, monkeypatch):
    import IMDLBenCo.training_scripts.trainer as trainer

    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    assert benco.main(train_args(shards, straight, "--epochs", "2", *TINY)) == 0

    real_epoch = trainer.train_one_epoch

    def killed_in_epoch_1(*args, **kwargs):
        if args[4] == 1:  # the epoch number
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(trainer, "train_one_epoch", killed_in_epoch_1)
    assert benco.main(train_args(shards, interrupted, "--epochs", "2", *TINY)) == 130
    assert torch.load(interrupted / "checkpoint-last.pth", weights_only=False)["epoch"] == 0
    monkeypatch.setattr(trainer, "train_one_epoch", real_epoch)
    assert benco.main(train_args(shards, interrupted, "--epochs", "2", "--resume", "auto", *TINY)) == 0

    a = torch.load(straight / "checkpoint-last.pth", weights_only=False)
    b = torch.load(interrupted / "checkpoint-last.pth", weights_only=False)
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    assert [r["epoch"] for r in read_log(interrupted)] == [0, 1]


@pytest.mark.slow  # long runs of Benco's baselines
@pytest.mark.parametrize("model", sorted(BASELINES))
def test_baseline_train_test_predict(model, shards, tmp_path):
    run = tmp_path / "run"
    flags = ["--model", model, *BASELINES[model]]
    assert benco.main(train_args(shards, run, "--epochs", "1", *flags)) == 0
    checkpoint = str(run / "checkpoint-last.pth")
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                checkpoint,
                "--test_data_path",
                str(shards / "test"),
                "--image_size",
                str(SIZE),
                "--device",
                "cpu",
                "--num_workers",
                "0",
            ]
        )
        == 0
    )
    results = json.loads((run / "opensdi_results.json").read_text())
    assert [s["split"] for s in results["splits"]] == ["sd15", "sd2"]
    assert all(s["n_images"] == 8 and s["pixel_f1"] is not None for s in results["splits"])
    has_label = model == "PSCC_Net"
    assert all((s["image_acc"] is not None) == has_label for s in results["splits"])
    preds = tmp_path / "preds"
    assert (
        benco.main(
            [
                "predict",
                "--checkpoint",
                checkpoint,
                str(shards / "test"),
                "--image_size",
                str(SIZE),
                "--device",
                "cpu",
                "--output_dir",
                str(preds),
            ]
        )
        == 0
    )
    assert len(json.loads((preds / "predictions.json").read_text())) == 16


def test_nan_loss_stops_with_the_step(shards, tmp_path, capsys):
    code = benco.main(train_args(shards, tmp_path / "run", "--epochs", "1", "--lr", "1e30", *TINY))
    err = capsys.readouterr().err
    assert code == 2
    assert "the loss became" in err and "at epoch 0, step " in err and "No checkpoint was written before this" in err


@pytest.mark.slow  # a long run
def test_validation_scores_what_benco_test_scores(shards, tmp_path):
    """The pixel F1 that chooses checkpoint-best.pth is the protocol's own figure: one epoch,
    validated on the test split, equals ``benco test`` of the weights after that epoch."""
    run = tmp_path / "run"
    assert benco.main(train_args(shards, run, "--epochs", "1", *TINY)) == 0
    chosen_on = read_log(run)[0]["val_mean_pixel_f1"]
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoint-last.pth"),
                "--test_data_path",
                str(shards / "test"),
                "--generators",
                "sd15",
                "--image_size",
                str(SIZE),
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--output_dir",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    tested = json.loads((tmp_path / "results" / "opensdi_results.json").read_text())["mean"]["pixel_f1"]
    assert chosen_on == pytest.approx(tested, abs=1e-6)
