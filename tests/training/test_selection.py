"""Model selection: ``checkpoint-best.pth`` chosen on rows held out from the training data by
default, on the test data with ``--select_on test``, and ``benco test`` saying which."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from dataset_adapters import OpenSDIError
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.host.datasets import DatasetOptions, hold_out, is_held_out, open_dataset
from tests.support import probe_models

ROOT = Path(__file__).resolve().parents[2]


def test_held_out_rows_do_not_depend_on_hash_seed_or_order():
    names = [f"partial/sd15/fake/{i}.jpg" for i in range(2000)]
    script = (
        "import sys, json; from imdlbenco_maskclip.host.datasets import is_held_out; "
        "names = json.load(sys.stdin); print(''.join('1' if h else '0' for h in is_held_out(names, 0.01)))"
    )
    # pytest's own process has a random hash seed; the other process a fixed one.
    other = subprocess.run(
        [sys.executable, "-c", script],
        input=json.dumps(names),
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONHASHSEED": "1", "PYTHONPATH": str(ROOT)},
        check=True,
    ).stdout.strip()
    held = is_held_out(names, 0.01)
    assert "".join("1" if h else "0" for h in held) == other
    assert 5 <= held.sum() <= 40  # about 1% of 2,000
    assert np.array_equal(is_held_out(names[::-1], 0.01), held[::-1])  # a property of each name, not of its place


def test_hold_out_opensdi_splits_by_key(opensdi_root):
    options = DatasetOptions(32)
    dataset = open_dataset(str(opensdi_root), options, ["sd15", "sd2"])
    split = hold_out(dataset, 0.3)
    again = hold_out(open_dataset(str(opensdi_root), options, ["sd15", "sd2"]), 0.3)
    train_keys = {split.train.key(i) for i in range(len(split.train))}
    val_keys = [split.validation.key(i) for i in range(len(split.validation))]
    all_keys = {dataset.key(i) for i in range(len(dataset))}
    held_keys = all_keys - train_keys
    assert len(held_keys) == split.held_out and split.total == len(dataset) == 40
    assert 0 < split.held_out < 40 and len(train_keys) == len(split.train)
    assert set(val_keys) <= held_keys
    assert set(val_keys) == {k for k in held_keys if k.startswith("partial/") and "/fake/" in k}
    assert val_keys == [again.validation.key(i) for i in range(len(again.validation))]
    assert split.description == f"{split.held_out} of 40 sd15 sd2 rows held out"
    sample = split.validation[0]
    assert sample["label"] == 1 and sample["mask"].sum() > 0
    with pytest.raises(OpenSDIError, match="one boolean per sample"):
        dataset.select(np.ones(3, dtype=bool))


def test_hold_out_benco_folders_by_file_name(mani_export):
    dataset = open_dataset(str(mani_export), DatasetOptions(32))
    split = hold_out(dataset, 0.3)
    names = [Path(p).name for p in dataset.tp_path]
    held = {n for n, h in zip(names, is_held_out(names, 0.3)) if h}
    assert {Path(p).name for p in split.train.tp_path} == set(names) - held
    assert {Path(p).name for p in split.validation.tp_path} <= held
    assert all(g != "Negative" for g in split.validation.gt_path)
    assert len(split.train) + split.held_out == len(dataset)


def probe_train(root, output_dir, *extra):
    probe_models.RECORDS.clear()
    argv = [
        "train",
        "--model",
        "AmpProbe",
        "--data_path",
        str(root),
        "--generators",
        "sd15",
        "--image_size",
        "32",
        "--batch_size",
        "4",
        "--test_batch_size",
        "4",
        "--epochs",
        "2",
        "--augment",
        "none",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--output_dir",
        str(output_dir),
        *extra,
    ]
    assert benco.main(argv) == 0
    return list(probe_models.RECORDS)


def test_train_with_only_data_path_selects_on_held_out_rows(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    records = probe_train(opensdi_root, run, "--val_fraction", "0.3")
    trained = {n for r in records for n in r["names"]}
    dataset = open_dataset(str(opensdi_root), DatasetOptions(32), ["sd15"])
    all_keys = [dataset.key(i) for i in range(len(dataset))]
    held = is_held_out(all_keys, 0.3)
    n_held = int(held.sum())
    assert 0 < n_held < 20 and len(trained) > 5
    assert trained <= {k for k, h in zip(all_keys, held) if not h}  # no training batch holds a held-out row
    best = torch.load(run / "checkpoint-best.pth", map_location="cpu", weights_only=False)
    assert best["selected_on"] == f"validation: {n_held} of 20 sd15 rows held out"
    out = capsys.readouterr().out
    assert f"checkpoint-best.pth is chosen on validation: {n_held} of 20 sd15 rows held out" in out

    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoint-best.pth"),
                "--test_data_path",
                str(opensdi_root),
                "--generators",
                "sd15",
                "--image_size",
                "32",
                "--device",
                "cpu",
                "--num_workers",
                "0",
            ]
        )
        == 0
    )
    captured = capsys.readouterr()
    assert "warning" not in captured.err
    results = json.loads((run / "opensdi_results.json").read_text())
    assert results["selected_on"] == best["selected_on"]
    assert f"Selected on: {best['selected_on']}" in (run / "opensdi_results.md").read_text()
    assert_threshold_chosen_on_validation(run, best, results, split=held_out_split(dataset))


def held_out_split(dataset):
    """The validation set ``benco train --val_fraction 0.3`` scored (unaugmented, at 32 px)."""
    return hold_out(dataset, 0.3).validation


def assert_threshold_chosen_on_validation(run, best, results, split):
    """The best checkpoint records the threshold where its own weights score the highest mean
    pixel F1 on the held-out validation; benco test scores pixel F1 there beside the table."""
    from imdlbenco_maskclip.checkpoints.loading import load_model
    from imdlbenco_maskclip.evaluation import protocol
    from imdlbenco_maskclip.host.runtime import Runtime
    from imdlbenco_maskclip.host.workarounds import allow_namespace_checkpoints

    allow_namespace_checkpoints()
    threshold = best["val_threshold"]
    assert threshold in protocol.THRESHOLDS
    assert torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)["val_threshold"] is None
    model = load_model(run / "checkpoint-best.pth")
    scored = protocol.evaluate(
        model, {"validation": split}, Runtime(torch.device("cpu")), 4, progress=False, curves=True
    )
    curve = protocol.threshold_curve(scored.records)
    assert curve[protocol.THRESHOLDS.index(threshold)] == max(v for v in curve if v is not None)
    assert results["val_threshold"] == threshold
    with open(run / "per_image.csv", newline="") as handle:
        lines = [line for line in csv.DictReader(handle) if line["pixel_f1_at_val_threshold"]]
    assert lines and results["splits"][0]["pixel_f1_at_val_threshold"] == pytest.approx(
        np.mean([float(line["pixel_f1_at_val_threshold"]) for line in lines])
    )
    assert results["splits"][0]["ci95"]["pixel_f1_at_val_threshold"] is not None
    assert f"pixel F1 at {threshold:g}" in (run / "opensdi_results.md").read_text()
    page = (run / "opensdi_report.html").read_text()
    assert f"The dashed line is the checkpoint's threshold, {threshold:g}, chosen on held-out validation" in page


def test_select_on_test_is_recorded_and_warned_about(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    probe_train(
        opensdi_root, run, "--select_on", "test", "--test_data_path", str(opensdi_root), "--test_generators", "sd2"
    )
    best = torch.load(run / "checkpoint-best.pth", map_location="cpu", weights_only=False)
    assert best["selected_on"] == f"test: {opensdi_root.name} sd2"
    assert best["val_threshold"] is None  # no threshold is chosen on test data
    last = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert last["selected_on"] == "none: the weights after epoch 2 of 2"
    capsys.readouterr()

    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoint-best.pth"),
                "--test_data_path",
                str(opensdi_root),
                "--generators",
                "sd15",
                "sd2",
                "--image_size",
                "32",
                "--device",
                "cpu",
                "--num_workers",
                "0",
            ]
        )
        == 0
    )
    err = capsys.readouterr().err
    assert err.count("benco test: warning:") == 1
    assert (
        f"selected on {opensdi_root} sd2 (--select_on test), which this run scores: its sd2 row is not a held-out result"
        in err
    )
    results = json.loads((run / "opensdi_results.json").read_text())
    assert results["selected_on"] == f"test: {opensdi_root.name} sd2"
    assert "**Warning:** the checkpoint was selected on" in (run / "opensdi_results.md").read_text()
