"""Shared fixtures: small synthetic OpenSDI shards in the real HF format, written once per session."""

from __future__ import annotations

import pytest

pytest_plugins = ("tests.support.released_fixtures",)

OPENSDI_SAMPLE = dict(n_per_class=5, image_size=64, rows_per_shard=12, rows_per_group=5)
"""Per generator 20 rows in two shards of row groups of 5; odd modes and sizes included."""


@pytest.fixture(scope="session")
def opensdi_root(tmp_path_factory):
    """A folder as ``huggingface-cli download`` leaves it: ``data/<gen>-NNNNN-of-MMMMM.parquet``."""
    from dataset_adapters.synthetic import write_synthetic_opensdi

    root = tmp_path_factory.mktemp("opensdi")
    write_synthetic_opensdi(root, seed=0, **OPENSDI_SAMPLE)
    return root


@pytest.fixture(scope="session")
def mani_export(opensdi_root, tmp_path_factory):
    """The synthetic shards exported as Benco's Tp/Gt folders."""
    from dataset_adapters.export import export_opensdi

    return export_opensdi(opensdi_root, tmp_path_factory.mktemp("mani"), format="mani")


@pytest.fixture(scope="session")
def json_export(opensdi_root, tmp_path_factory):
    """The synthetic shards exported as images plus Benco's JSON list."""
    from dataset_adapters.export import export_opensdi

    return export_opensdi(opensdi_root, tmp_path_factory.mktemp("json"), format="json")


TINY_IMAGE_SIZE = 64


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    """An untrained tiny MaskCLIP saved as ``benco train`` saves it (run at 64 px, resized)."""
    import argparse

    import torch

    from imdlbenco_maskclip.checkpoints.layout import save_atomic
    from imdlbenco_maskclip.model import MaskCLIP

    torch.manual_seed(0)
    model = MaskCLIP(setting="tiny")
    path = tmp_path_factory.mktemp("tiny_checkpoint") / "checkpoint-best.pth"
    args = argparse.Namespace(image_size=TINY_IMAGE_SIZE, if_padding=False, model="MaskCLIP")
    save_atomic(
        {"model": model.state_dict(), "model_name": "MaskCLIP", "model_args": {"setting": "tiny"}, "args": args}, path
    )
    return path
