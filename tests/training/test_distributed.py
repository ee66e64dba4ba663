"""Under torchrun on CPU (gloo): training and the protocol see every image once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # torchrun

ROOT = Path(__file__).resolve().parents[2]


def torchrun(*argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "imdlbenco_maskclip",
        *argv,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=600)


def test_torchrun_gloo_train_and_test(tmp_path):
    from dataset_adapters.synthetic import write_synthetic_opensdi

    write_synthetic_opensdi(tmp_path / "train", generators=("sd15",), n_per_class=4, image_size=64, seed=3)
    write_synthetic_opensdi(tmp_path / "test", generators=("sd15", "sd2"), n_per_class=3, image_size=64, seed=4)
    run = tmp_path / "run"
    done = torchrun(
        "train",
        "--model",
        "MaskCLIP",
        "--setting",
        "tiny",
        "--data_path",
        str(tmp_path / "train"),
        "--test_data_path",
        str(tmp_path / "test"),
        "--test_generators",
        "sd15",
        "--image_size",
        "64",
        "--batch_size",
        "2",
        "--test_batch_size",
        "2",
        "--epochs",
        "2",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--edge_mask_width",
        "3",
        "--output_dir",
        str(run),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (run / "log.txt").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1]  # written once, by rank 0

    done = torchrun(
        "test",
        "--checkpoint",
        str(run / "checkpoint-last.pth"),
        "--test_data_path",
        str(tmp_path / "test"),
        "--image_size",
        "64",
        "--test_batch_size",
        "4",
        "--device",
        "cpu",
        "--num_workers",
        "0",
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((run / "opensdi_results.json").read_text())
    # 3 per class x {entire, partial} x {real, fake} = 12 per split, split over 2 ranks unevenly by batch.
    assert [(s["split"], s["n_images"], s["n_pixel"]) for s in results["splits"]] == [("sd15", 12, 3), ("sd2", 12, 3)]


def test_nan_in_one_process_stops_every_process_with_one_message(opensdi_root, tmp_path):
    """Only process 1 sees a NaN loss (at its 4th step); both stop there, promptly, saying the same."""
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(ROOT / "tests" / "support" / "run_probe.py"),
        "train",
        "--model",
        "NaNProbe",
        "--nan_rank",
        "1",
        "--nan_step",
        "3",
        "--data_path",
        str(opensdi_root),
        "--generators",
        "sd15",
        "--select_on",
        "test",
        "--test_data_path",
        str(opensdi_root),
        "--test_generators",
        "sd2",
        "--image_size",
        "32",
        "--batch_size",
        "2",
        "--test_batch_size",
        "2",
        "--epochs",
        "2",
        "--augment",
        "none",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--output_dir",
        str(tmp_path / "run"),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=180)
    assert done.returncode != 0
    messages = [line for line in done.stderr.splitlines() if "benco train: error:" in line]
    assert len(messages) == 2, done.stderr[-3000:]
    assert messages[0].split("error:", 1)[1] == messages[1].split("error:", 1)[1]
    assert (
        "the loss stopped being finite in process(es) 1 (nan) of 2 at epoch 0, step 3; every process stops here"
        in messages[0]
    )
    assert "No checkpoint was written before this" in messages[0]
