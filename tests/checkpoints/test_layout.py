"""The checkpoint layout: ours (Benco's dict plus our entries) reads back whole; Benco's own
``save_model`` files and bare state dicts read with what they lack as None or empty."""

from __future__ import annotations

import argparse

import torch

from imdlbenco_maskclip.checkpoints import layout
from imdlbenco_maskclip.checkpoints.layout import TrainingState
from imdlbenco_maskclip.checkpoints.loading import BENCO, PACKAGE, read_checkpoint


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Linear(2, 1)
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.ones(1, 2)).sum().backward()
    optimizer.step()
    return model, optimizer


def test_a_written_state_reads_back(tmp_path):
    model, optimizer = _trained()
    state = TrainingState(
        weights=model.state_dict(),
        model_name="Linear",
        model_args={"width": 2},
        run_args={"model": "Linear", "output_dir": tmp_path, "generators": ("sd15",)},
        epoch=1,
        best_metric=0.5,
        history=[{"epoch": 0}, {"epoch": 1}],
        precision="float32",
        selected_on="validation: 3 of 20 sd15 rows held out",
        selection_data=None,
        optimizer=optimizer.state_dict(),
        scaler={},
    )
    layout.write(state, tmp_path / "last.pth")
    back = layout.read(tmp_path / "last.pth")
    assert back.run_args == {"model": "Linear", "output_dir": str(tmp_path), "generators": ["sd15"]}  # plain values
    assert back.weights.keys() == state.weights.keys() and all(
        torch.equal(back.weights[k], v) for k, v in state.weights.items()
    )
    assert back.optimizer["state"].keys() == state.optimizer["state"].keys()
    assert (back.model_name, back.model_args, back.epoch, back.best_metric, back.history) == (
        "Linear",
        {"width": 2},
        1,
        0.5,
        state.history,
    )
    assert (back.precision, back.selected_on, back.selection_data, back.scaler) == (
        "float32",
        state.selected_on,
        None,
        {},
    )
    assert isinstance(
        torch.load(tmp_path / "last.pth", weights_only=False)["args"], argparse.Namespace
    )  # Benco's layout
    assert read_checkpoint(tmp_path / "last.pth").layout == PACKAGE

    layout.write(TrainingState(weights=model.state_dict(), model_name="Linear"), tmp_path / "best.pth")
    assert not {"optimizer", "scaler"} & set(torch.load(tmp_path / "best.pth", weights_only=False))
    assert layout.read(tmp_path / "best.pth").optimizer is None


def test_bencos_own_checkpoint_and_a_bare_state_dict_read(tmp_path):
    from IMDLBenCo.training_scripts.utils import misc

    model, optimizer = _trained()
    misc.save_model(
        argparse.Namespace(output_dir=str(tmp_path), model="Linear"),
        7,
        model,
        model,
        optimizer,
        misc.NativeScalerWithGradNormCount(),
    )
    benco = layout.read(tmp_path / "checkpoint-7.pth")
    assert (benco.model_name, benco.named_model, benco.epoch, benco.history, benco.precision) == (
        None,
        "Linear",
        7,
        [],
        None,
    )
    assert benco.optimizer is not None and benco.run_args["output_dir"] == str(tmp_path)
    assert read_checkpoint(tmp_path / "checkpoint-7.pth").layout == BENCO

    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, tmp_path / "bare.pth")
    bare = layout.read(tmp_path / "bare.pth")
    assert bare.weights.keys() == model.state_dict().keys()
    assert (bare.named_model, bare.epoch, bare.run_args, bare.optimizer) == (None, None, {}, None)
