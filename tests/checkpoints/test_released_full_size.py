"""A full-size file in the exact layout of the released MaskCLIP checkpoints (3.14 GB: the
published state dict with the frozen CLIP, AdamW state for every trainable tensor, scaler,
epoch, ``args``), written once for the module:

* ``load_model`` peaks at no more than 1.25x the loaded model's bytes above the RSS before the
  call (the peak RSS of a fresh process, ``VmHWM`` reset before the call, loading only);
* ``benco predict --checkpoint hf://nebula/MaskCLIP-weights/FILE`` with ``HF_HUB_OFFLINE=1`` and
  the file in a Hugging Face cache gives the outputs of the file's local path;
* ``benco weights export`` gives a folder of at most the model's own bytes whose outputs are the
  file's, and with ``--without-clip`` one under 0.5 GB that records the CLIP's source;
  ``benco weights info`` reads the file and both folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import imdlbenco_maskclip
from imdlbenco_maskclip.cli import benco
from tests.support.released_layout import RELEASED_NAME, REPO, one_thread, put_in_hub_cache

pytestmark = pytest.mark.slow  # a 3.14 GB file, the full-size model (several minutes, about 6 GB of memory)

ROOT = Path(__file__).resolve().parents[2]
BOUND = 1.25


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]), **extra}


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("released") / RELEASED_NAME
    subprocess.run(
        [sys.executable, "-m", "tests.support.released_layout", "write", str(path), "--setting", "paper"],
        check=True,
        cwd=ROOT,
        env=env(),
    )
    assert 3.0e9 < path.stat().st_size < 3.3e9
    return path


MODEL_BYTES = 2_190_000_000  # about: parameters and buffers of the paper setting, fp32


def test_load_model_stays_within_the_memory_bound(released):
    measured = subprocess.run(
        [sys.executable, "-m", "tests.support.released_layout", "measure", str(released)],
        check=True,
        cwd=ROOT,
        env=env(),
        capture_output=True,
        text=True,
    )
    result = json.loads(measured.stdout.strip().splitlines()[-1])
    assert abs(result["model_bytes"] - MODEL_BYTES) < 0.01e9
    assert result["peak_above_start"] <= BOUND * result["model_bytes"], result


def test_benco_predict_of_the_hub_file_offline_equals_its_local_path(released, tmp_path):
    cache = tmp_path / "hub"
    put_in_hub_cache(cache, REPO, {RELEASED_NAME: released}, link=True)
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(photo)
    rows = {}
    for name, checkpoint in (("local", str(released)), ("hub", f"hf://{REPO}/{RELEASED_NAME}")):
        out = tmp_path / name
        argv = ["predict", "--checkpoint", checkpoint, str(photo), "--device", "cpu", "--output_dir", str(out)]
        subprocess.run(
            [sys.executable, "-m", "imdlbenco_maskclip", *argv],
            check=True,
            cwd=tmp_path,
            env=env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache), OMP_NUM_THREADS="1"),
        )
        rows[name] = json.loads((out / "predictions.json").read_text())[0]
        rows[name]["mask_pixels"] = np.asarray(Image.open(out / "masks" / "photo.png")).tolist()
        rows[name].pop("mask")
    assert rows["local"] == rows["hub"]


def test_export_and_info_at_full_size(released, tmp_path, capsys):
    assert benco.main(["weights", "info", str(released)]) == 0
    shown = capsys.readouterr().out
    assert "optimizer    " in shown and "loads        yes" in shown and "setting=paper" in shown

    folder = tmp_path / "with_clip"
    assert benco.main(["weights", "export", str(released), str(folder)]) == 0
    assert (folder / "model.safetensors").stat().st_size <= MODEL_BYTES * 1.005
    slim = tmp_path / "without_clip"
    assert benco.main(["weights", "export", str(released), str(slim), "--without-clip"]) == 0
    assert (slim / "model.safetensors").stat().st_size < 0.5e9
    clip = json.loads((slim / "config.json").read_text())["clip"]
    assert (clip["in_file"], clip["source"], clip["left_out"]) == (False, "openai", "export")
    for path in (folder, slim):
        assert benco.main(["weights", "info", str(path), "--no-check"]) == 0
    assert "left out; rebuilt from openai" in capsys.readouterr().out

    image = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with one_thread(), torch.no_grad():
        from_file = imdlbenco_maskclip.load_model(released)(image=image)
        from_folder = imdlbenco_maskclip.load_model(folder)(image=image)
    assert all(torch.equal(from_file[key], from_folder[key]) for key in ("pred_mask", "pred_label"))
