"""Long runs: a NaN stop that says where the good weights are, the global batch, the quiet
console, and ``--deterministic`` resumes that end bitwise equal across processes."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from imdlbenco_maskclip.cli import benco, options
from imdlbenco_maskclip.cli import train as train_command
from imdlbenco_maskclip.common.errors import UserError
from imdlbenco_maskclip.training import loop as training
from imdlbenco_maskclip.training.progress import EpochProgress

ROOT = Path(__file__).resolve().parents[2]


def probe_args(root, output_dir, model="AmpProbe", *extra):
    """Benco's loop on 20 sd15 rows (5 steps of 4 per epoch), the best chosen on sd2."""
    from tests.support import probe_models  # noqa: F401  (registers the probes)

    return [
        "train",
        "--model",
        model,
        "--data_path",
        str(root),
        "--generators",
        "sd15",
        "--select_on",
        "test",
        "--test_data_path",
        str(root),
        "--test_generators",
        "sd2",
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


def test_nan_in_the_first_epoch_says_no_checkpoint_exists(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert benco.main(probe_args(opensdi_root, run, "NaNProbe", "--nan_step", "2")) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 0, step 2" in err
    assert "No checkpoint was written before this" in err and "checkpoint-last.pth" not in err
    assert not (run / "checkpoint-last.pth").exists()


def test_nan_after_an_epoch_names_the_last_good_checkpoint(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert benco.main(probe_args(opensdi_root, run, "NaNProbe", "--nan_step", "6")) == 2
    err = capsys.readouterr().err
    assert "the loss became nan at epoch 1, step 1" in err
    assert f"The last good weights are in {run / 'checkpoint-last.pth'} (after epoch 0)" in err
    assert torch.load(run / "checkpoint-last.pth", weights_only=False)["epoch"] == 0


def test_global_batch_size_sets_accumulation(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert benco.main(probe_args(opensdi_root, run, "AmpProbe", "--global_batch_size", "8", "--epochs", "1")) == 0
    assert "8 images per optimizer step (4 x 1 process(es) x 2 accumulation step(s))" in capsys.readouterr().out
    assert torch.load(run / "checkpoint-last.pth", weights_only=False)["args"].accum_iter == 2

    assert benco.main(probe_args(opensdi_root, run, "AmpProbe", "--global_batch_size", "6")) == 2
    err = capsys.readouterr().err
    assert "--global_batch_size 6 is not a multiple of --batch_size 4 x 1 process(es) = 4" in err
    assert benco.main(probe_args(opensdi_root, run, "AmpProbe", "--global_batch_size", "8", "--accum_iter", "4")) == 2
    assert "--accum_iter 4 (from flag) contradicts --global_batch_size 8" in capsys.readouterr().err


def test_accumulation_steps_over_processes():
    assert training.accumulation_steps(64, 16, 1) == 4
    assert training.accumulation_steps(64, 16, 4) == 1
    with pytest.raises(UserError, match="--global_batch_size 64 is not a multiple of --batch_size 16 x 3 process"):
        training.accumulation_steps(64, 16, 3)


def test_recipes():
    paper = options.resolve(train_command.OPTIONS, __import__("argparse").Namespace(), "maskclip_paper").values
    assert (paper["amp"], paper["global_batch_size"], paper["lr"], paper["epochs"], paper["select_on"]) == (
        "off",
        64,
        1e-4,
        50,
        "test",
    )
    assert (paper["test_data_path"], paper["test_generators"]) == ("nebula/OpenSDI_test", ["sd15"])
    fast = options.resolve(train_command.OPTIONS, __import__("argparse").Namespace(), "maskclip_fast").values
    assert (fast["amp"], fast["global_batch_size"], fast["select_on"], fast["val_fraction"]) == (
        "bf16",
        64,
        "validation",
        0.01,
    )
    assert fast["test_data_path"] is None


def test_console_has_one_line_per_epoch_and_benco_log_goes_to_a_file(opensdi_root, tmp_path, capsys):
    run = tmp_path / "run"
    assert benco.main(probe_args(opensdi_root, run)) == 0
    captured = capsys.readouterr()
    printed = captured.out + captured.err
    assert "Epoch: [" not in printed and "Averaged stats" not in printed
    assert [line.split(":")[0] for line in captured.out.splitlines() if line.startswith("epoch ")] == [
        "epoch 1/2",
        "epoch 2/2",
    ]
    assert len(captured.out.splitlines()) <= 8
    benco_log = (run / "train_log.txt").read_text()
    assert "Epoch: [0]" in benco_log and "Epoch: [1]" in benco_log

    assert benco.main(probe_args(opensdi_root, tmp_path / "verbose", "AmpProbe", "--verbose")) == 0
    assert "Epoch: [1]" in capsys.readouterr().out
    assert not (tmp_path / "verbose" / "train_log.txt").exists()


def test_progress_bar_shows_loss_lr_speed_and_eta():
    model = torch.nn.Linear(1, 1)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.25)
    batches = [{"image": torch.zeros(4, 3, 8, 8)} for _ in range(3)]

    class SlowLoader(list):
        def __iter__(self):  # steps slower than tqdm's 0.1 s between redraws
            for batch in super().__iter__():
                time.sleep(0.15)
                yield batch

    stream = io.StringIO()
    losses = iter([0.5, 0.4, 0.3])
    progress = EpochProgress(
        SlowLoader(batches), "epoch 1/3", optimizer, lambda: next(losses), world_size=2, enabled=True, stream=stream
    )
    assert len(progress) == 3 and list(progress) == batches
    shown = stream.getvalue()
    assert "epoch 1/3" in shown and "loss=0.3000" in shown and "lr=2.50e-01" in shown and "img/s=" in shown
    assert "/3 [" in shown and "<00:0" in shown  # tqdm's steps done and elapsed<remaining
    assert progress.images == 24  # 3 batches of 4 in each of 2 processes


def run_benco(
    output_dir: Path, data: Path, threads: int, *extra: str, kill_at_epoch: int | None = None
) -> subprocess.CompletedProcess:
    """``benco train`` of the tiny MaskCLIP in a new process with ``threads`` CPU threads."""
    argv = [
        "train",
        "--model",
        "MaskCLIP",
        "--setting",
        "tiny",
        "--data_path",
        str(data),
        "--select_on",
        "test",
        "--test_data_path",
        str(data),
        "--test_generators",
        "sd2",
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
        "flips",
        "--edge_mask_width",
        "3",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--num_workers",
        "0",
        "--seed",
        "5",
        "--output_dir",
        str(output_dir),
        *extra,
    ]
    command = [sys.executable, str(ROOT / "tests" / "support" / "run_probe.py")]
    if kill_at_epoch is not None:
        command += ["--kill-at-epoch", str(kill_at_epoch)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    return subprocess.run(command + argv, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # several training processes
def test_deterministic_run_killed_and_resumed_in_new_processes_ends_bitwise_equal(opensdi_root, tmp_path):
    """The uninterrupted run and the two halves of the interrupted one run in three processes
    with different thread counts, as on machines with different core counts or loads."""
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = run_benco(straight, opensdi_root, 2, "--deterministic")
    assert done.returncode == 0, done.stderr[-3000:]

    killed = run_benco(interrupted, opensdi_root, 1, "--deterministic", kill_at_epoch=1)
    assert killed.returncode == -9, killed.stderr[-3000:]
    assert torch.load(interrupted / "checkpoint-last.pth", weights_only=False)["epoch"] == 0
    resumed = run_benco(interrupted, opensdi_root, 2, "--deterministic", "--resume", "auto")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resumed" in resumed.stdout

    a = torch.load(straight / "checkpoint-last.pth", weights_only=False)
    b = torch.load(interrupted / "checkpoint-last.pth", weights_only=False)
    assert a["epoch"] == b["epoch"] == 1
    assert a["model"].keys() == b["model"].keys()
    for key in a["model"]:
        assert torch.equal(a["model"][key], b["model"][key]), key
    for x, y in zip(a["optimizer"]["state"].values(), b["optimizer"]["state"].values()):
        assert all(torch.equal(x[k], y[k]) for k in x)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_checkpoints_resume_across_cpu_and_cuda(opensdi_root, tmp_path):
    """A checkpoint written on the CPU resumes on CUDA (fp16, whose loss scale it lacks) and one
    written on CUDA resumes on the CPU."""
    for first, then, amp in (("cpu", "cuda", "fp16"), ("cuda", "cpu", "off")):
        run = tmp_path / f"{first}-{then}"
        assert benco.main(probe_args(opensdi_root, run, "AmpProbe", "--device", first)) == 0
        state = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)
        torch.save({**state, "epoch": 0, "history": state["history"][:1]}, run / "checkpoint-last.pth")
        assert (
            benco.main(probe_args(opensdi_root, run, "AmpProbe", "--device", then, "--amp", amp, "--resume", "auto"))
            == 0
        )
        resumed = torch.load(run / "checkpoint-last.pth", map_location="cpu", weights_only=False)
        assert resumed["epoch"] == 1 and all(torch.isfinite(v).all() for v in resumed["model"].values())
