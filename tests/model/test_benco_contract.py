"""The tiny MaskCLIP inside Benco's own ``train_one_epoch`` and ``test_one_epoch``.

Data: synthetic OpenSDI shards in the real HF parquet format, read by ``OpenSDIDataset``.
Image metrics use the single-process evaluators of ``imdlbenco_maskclip.compat``.
"""

from __future__ import annotations

import argparse
import math
import os

import pytest
import torch
from torch.utils.data import DataLoader

from imdlbenco_maskclip.host import workarounds
from imdlbenco_maskclip.model import MaskCLIP

DEVICE = torch.device(os.environ.get("MASKCLIP_TEST_DEVICE", "cpu"))
SIZE = 64


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    from dataset_adapters.synthetic import write_synthetic_opensdi

    root = tmp_path_factory.mktemp("opensdi_model")
    write_synthetic_opensdi(root, generators=["sd15"], n_per_class=6, image_size=SIZE, seed=0)
    return root


def loader(root, batch_size: int, shuffle: bool, subset: str = "all") -> DataLoader:
    from dataset_adapters import OpenSDIDataset

    dataset = OpenSDIDataset(root, subset=subset, is_resizing=True, output_size=(SIZE, SIZE), edge_width=3)
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, generator=torch.Generator().manual_seed(0))


def train_args(epochs: int) -> argparse.Namespace:
    return argparse.Namespace(
        if_not_amp=DEVICE.type != "cuda",
        accum_iter=1,
        if_predict_label=True,
        lr=2e-3,
        min_lr=1e-4,
        warmup_epochs=0,
        epochs=epochs,
    )


def test_benco_train_and_test_loops_with_pixel_and_image_metrics(shards, tmp_path):
    from IMDLBenCo.evaluation import PixelF1, PixelIOU
    from IMDLBenCo.training_scripts.tester import test_one_epoch
    from IMDLBenCo.training_scripts.trainer import train_one_epoch
    from IMDLBenCo.training_scripts.utils import misc
    from torch.utils.tensorboard import SummaryWriter

    workarounds.install()
    torch.manual_seed(0)
    model = MaskCLIP("tiny").to(DEVICE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.05)
    writer = SummaryWriter(str(tmp_path / "logs"))
    stats = train_one_epoch(
        model,
        loader(shards, 8, True),
        optimizer,
        DEVICE,
        0,
        misc.NativeScalerWithGradNormCount(),
        log_writer=writer,
        args=train_args(1),
    )
    assert {"ce", "bce", "edge", "total", "lr"} <= set(stats)
    assert all(math.isfinite(stats[k]) for k in ("ce", "bce", "edge", "total"))

    evaluators = [PixelF1(), PixelIOU()]
    args = argparse.Namespace(no_model_eval=False, distributed=False, test_batch_size=8)
    results = test_one_epoch(
        model, loader(shards, 8, False), evaluators, DEVICE, 0, name="sd15", log_writer=writer, args=args
    )
    writer.close()
    for evaluator in evaluators:
        value = float(results[evaluator.name])
        assert 0.0 <= value <= 1.0, (evaluator.name, value)
    assert not model.training or args.no_model_eval


def test_a_few_dozen_steps_lower_the_loss(shards):
    """Benco's own loop, six epochs of six steps: the epoch-mean loss falls."""
    from IMDLBenCo.training_scripts.trainer import train_one_epoch
    from IMDLBenCo.training_scripts.utils import misc

    workarounds.install()
    torch.manual_seed(0)
    model = MaskCLIP("tiny").to(DEVICE)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-3, weight_decay=0.05)
    data = loader(shards, 4, True)
    scaler = misc.NativeScalerWithGradNormCount()
    epochs = 6
    stats = [train_one_epoch(model, data, optimizer, DEVICE, e, scaler, args=train_args(epochs)) for e in range(epochs)]
    assert len(data) * epochs >= 36
    total = [s["total"] for s in stats]
    bce = [s["bce"] for s in stats]
    assert total[-1] < 0.85 * total[0], total
    assert bce[-1] < 0.85 * bce[0], bce
