"""``--amp``: the dtype asked for reaches the model's forward inside Benco's own ``train_one_epoch``.

Benco's loop enters ``torch.cuda.amp.autocast()`` (always fp16, CUDA only); ``compat.trainer_autocast``
replaces that name for the length of the loop with autocast on the run's device in the chosen
dtype. The CUDA path is the one users get; here the same code runs on the CPU, where autocast
exists in bf16 and fp16 as well, so the test sees a real autocast region, not a mock.
"""

from __future__ import annotations

import json

import pytest
import torch

from imdlbenco_maskclip.cli import benco
from tests.support import probe_models


def train(opensdi_root, output_dir, *extra):
    probe_models.RECORDS.clear()
    argv = [
        "train",
        "--model",
        "AmpProbe",
        "--data_path",
        str(opensdi_root),
        "--generators",
        "sd15",
        "--val_fraction",
        "0.2",
        "--image_size",
        "32",
        "--batch_size",
        "4",
        "--test_batch_size",
        "4",
        "--epochs",
        "1",
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


@pytest.mark.parametrize(
    "amp, dtype, scaled",
    [("bf16", torch.bfloat16, False), ("fp16", torch.float16, True), ("off", None, False), ("auto", None, False)],
)
def test_the_chosen_dtype_reaches_the_forward_in_bencos_loop(opensdi_root, tmp_path, amp, dtype, scaled):
    records = train(opensdi_root, tmp_path / "run", "--amp", amp)
    assert records, "the probe never ran in training mode"
    for record in records:
        assert record["caller"] == ("IMDLBenCo.training_scripts.trainer.trainer", "train_one_epoch")
        assert record["autocast"] is (dtype is not None)
        assert record["matmul_dtype"] == (dtype or torch.float32)
        if dtype is not None:
            assert record["autocast_dtype"] == dtype

    precision = {torch.bfloat16: "bfloat16", torch.float16: "float16", None: "float32"}[dtype]
    log = [json.loads(line) for line in (tmp_path / "run" / "log.txt").read_text().splitlines()]
    assert [r["precision"] for r in log] == [precision]
    checkpoint = torch.load(tmp_path / "run" / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    assert checkpoint["precision"] == precision
    assert bool(checkpoint["scaler"]) is scaled  # a GradScaler's state is empty while it is disabled
    assert (
        "Auto Mixed Precision (AMP) is " + ("enabled" if dtype else "disabled")
        in (tmp_path / "run" / "train_log.txt").read_text()
    )


def test_the_autocast_shim_ends_with_the_loop(opensdi_root, tmp_path):
    original = torch.cuda.amp.autocast
    train(opensdi_root, tmp_path / "run", "--amp", "bf16")
    assert torch.cuda.amp.autocast is original
    assert not torch.is_autocast_enabled("cpu")


def test_an_fp32_checkpoint_resumes_in_fp16(opensdi_root, tmp_path, capsys):
    """A checkpoint without a loss scale (fp32, bf16, or any CPU run) resumes with fp16 scaling,
    as one written on a CPU does on a GPU; torch's GradScaler refuses such an empty state."""
    run = tmp_path / "run"
    train(opensdi_root, run, "--amp", "off", "--epochs", "2")
    first = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)
    state = {**first, "epoch": 0, "history": first["history"][:1]}
    torch.save(state, run / "checkpoint-last.pth")
    capsys.readouterr()
    records = train(opensdi_root, run, "--amp", "fp16", "--epochs", "2", "--resume", "auto")
    out = capsys.readouterr().out
    assert "the checkpoint trained in float32; this run goes on in float16" in out
    assert "has no fp16 loss scale" in out
    assert records and all(r["matmul_dtype"] == torch.float16 for r in records)
    assert torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)["scaler"]
