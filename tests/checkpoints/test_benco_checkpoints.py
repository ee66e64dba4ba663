"""Benco ``misc.save_model`` checkpoints of built-in baselines, written by Benco's own code, load
with no model name and no options: the model is built from the ``args`` entries that match its
parameters (as Benco's ``test.py`` does), with the pretrained file its args name set aside (the
state dict replaces it), and tested at the run's image size and padding."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest
import torch

import imdlbenco_maskclip
from imdlbenco_maskclip.checkpoints.loading import BENCO, read_checkpoint
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.host.models import build_model
from imdlbenco_maskclip.inference.predictor import Predictor

SIZE = 64
NOWHERE = "/nowhere/pretrained.pth"
BASELINES = {
    # IML_ViT at a small width; its MAE file (vit_pretrain_path) points nowhere.
    "IML_ViT": dict(input_size=SIZE, embed_dim=96, fpn_channels=32, mlp_embeding_dim=32, vit_pretrain_path=NOWHERE),
    # PSCC_Net's HRNet file (pretrain_path) points nowhere.
    "PSCC_Net": dict(input_size=SIZE, pretrain_path=NOWHERE),
}


NO_FILE = {"IML_ViT": {"vit_pretrain_path": None}, "PSCC_Net": {"pretrain_path": ""}}
"""How each model is built here without its pretrained file."""


def save_with_benco(model_name: str, folder: Path, **run: object) -> Path:
    """Build the model offline and save it with Benco's ``misc.save_model``; its ``args`` also
    carry the model's options, the pretrained file among them (as a run whose script merged
    them would)."""
    from IMDLBenCo.training_scripts.utils import misc

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = build_model(model_name, {**BASELINES[model_name], **NO_FILE[model_name]})
    optimizer = torch.optim.AdamW(model.parameters())
    args = argparse.Namespace(
        model=model_name, output_dir=str(folder), image_size=SIZE, device="cuda", **BASELINES[model_name], **run
    )
    misc.save_model(args, 4, model, model, optimizer, misc.NativeScalerWithGradNormCount())
    return folder / "checkpoint-4.pth"


@pytest.mark.parametrize("model_name", ["PSCC_Net", pytest.param("IML_ViT", marks=pytest.mark.slow)])
def test_a_benco_checkpoint_builds_from_its_args_with_no_flags(model_name, tmp_path):
    path = save_with_benco(model_name, tmp_path, if_padding=True)
    stored = read_checkpoint(path)
    assert (stored.layout, stored.model_name) == (BENCO, model_name)
    assert stored.model_options == {**BASELINES[model_name]}  # as the args hold them; not device
    model = imdlbenco_maskclip.load_model(path)  # the pretrained file, nowhere, is never opened
    saved = torch.load(path, weights_only=False)["model"]
    assert all(torch.equal(value, saved[key]) for key, value in model.state_dict().items())
    predictor = Predictor.from_checkpoint(path, device="cpu")
    assert (predictor.image_size, predictor.padding) == (SIZE, True)


@pytest.mark.slow  # builds IML_ViT twice
def test_the_model_name_and_options_still_override_the_args(tmp_path):
    path = save_with_benco("IML_ViT", tmp_path)
    with pytest.raises(ValueError, match="holds a IML_ViT, not a PSCC_Net"):
        imdlbenco_maskclip.load_model(path, model_name="PSCC_Net")
    with pytest.raises(ValueError, match="shape mismatches: .*rel_pos_h"):  # IML_ViT sized for another input
        imdlbenco_maskclip.load_model(path, input_size=2 * SIZE)


@pytest.mark.slow  # a benco test run of a baseline
def test_benco_test_runs_a_benco_checkpoint_with_no_model_and_no_config(tmp_path):
    from dataset_adapters.synthetic import write_synthetic_opensdi

    data = tmp_path / "data"
    write_synthetic_opensdi(data, generators=("sd3",), n_per_class=1, image_size=SIZE, seed=5)
    path = save_with_benco("PSCC_Net", tmp_path / "run")
    argv = ["test", "--checkpoint", str(path), "--test_data_path", str(data), "--device", "cpu", "--num_workers", "0"]
    assert benco.main(argv) == 0
    results = json.loads((path.parent / "opensdi_results.json").read_text())
    assert results["model"] == "PSCC_Net" and [s["split"] for s in results["splits"]] == ["sd3"]
    assert "64 (resized)" in (path.parent / "opensdi_report.html").read_text()
