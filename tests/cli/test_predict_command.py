"""``benco predict`` makes OpenMP threads sleep while they wait, unless the user chose how; it
pads or resizes as the checkpoint's run did unless the flag or the config says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from imdlbenco_maskclip.cli import benco, options, predict
from imdlbenco_maskclip.cli.predict import wait_passively

ROOT = Path(__file__).resolve().parents[2]
SHOW = (
    "import os; from imdlbenco_maskclip.cli.predict import wait_passively; wait_passively(); "
    "print(os.environ.get('OMP_WAIT_POLICY'))"
)


def policy_in_a_fresh_process(**chosen: str) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")}
    env.update(PYTHONPATH=str(ROOT), **chosen)
    return subprocess.run([sys.executable, "-c", SHOW], env=env, capture_output=True, text=True).stdout.strip()


def test_openmp_waits_passively_unless_the_user_chose(monkeypatch):
    assert policy_in_a_fresh_process() == "PASSIVE"
    assert policy_in_a_fresh_process(OMP_WAIT_POLICY="ACTIVE") == "ACTIVE"
    assert policy_in_a_fresh_process(GOMP_SPINCOUNT="300000") == "None"
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    import torch  # noqa: F401  (once torch is loaded, OpenMP has read its settings: nothing changes)

    wait_passively()
    assert "OMP_WAIT_POLICY" not in os.environ


def test_padding_is_the_checkpoint_runs_unless_the_flag_or_the_config_says(tiny_checkpoint, tmp_path):
    import argparse

    import torch

    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    padded = tmp_path / "padded.pth"
    torch.save({**payload, "args": argparse.Namespace(**{**vars(payload["args"]), "if_padding": True})}, padded)
    config = tmp_path / "resize.yaml"
    config.write_text("if_padding: false\n")
    parser = benco.build_parser()
    for checkpoint, extra, expected in (
        (padded, [], True),
        (padded, ["--config", str(config)], False),
        (tiny_checkpoint, [], False),
        (tiny_checkpoint, ["--if_padding"], True),
    ):
        args = parser.parse_args(["predict", "photo.jpg", "--checkpoint", str(checkpoint), "--device", "cpu", *extra])
        built = predict.build_predictor(options.resolve(predict.OPTIONS, args, args.config))
        assert built.padding is expected, (checkpoint, extra)
