"""OpenSDIDataset gives Benco's own samples: compared with ManiDataset/JsonDataset on the exported
copy, with ``datasets``' decoding of the shards, and across DataLoader workers."""

from __future__ import annotations

import os
import pickle
import random

import numpy as np
import pytest
import torch
from IMDLBenCo.datasets import JsonDataset, ManiDataset
from IMDLBenCo.registry import DATASETS
from IMDLBenCo.transforms import get_albu_transforms
from torch.utils.data import DataLoader

from dataset_adapters import OpenSDIDataset, OpenSDIError
from dataset_adapters.export import file_stem

GENERATORS = ["sd15", "sd2", "sdxl", "sd3", "flux"]

# (padding, output size, edge width, augment): resize and pad, padding smaller than some images
# (cropped), edge widths 3/7/15 on 64x64, 71x59 and 48x64 images, and Benco's train augmentations
# (which include copy-move and inpainting, so labels change and are recomputed).
SETTINGS = [
    (False, 48, 7, False),
    (True, 80, 3, True),
    (True, 56, 15, False),
    (False, 72, None, True),
]


def _kwargs(padding: bool, size: int, edge: int | None, augment: bool) -> dict:
    return dict(
        is_padding=padding,
        is_resizing=not padding,
        output_size=(size, size),
        edge_width=edge,
        common_transforms=get_albu_transforms("train") if augment else None,
    )


def _seeded(dataset, index: int, seed: int) -> dict:
    random.seed(seed)
    np.random.seed(seed)
    return dataset[index]


def _assert_same(ours: dict, benco: dict, labels: bool) -> None:
    assert set(ours) == set(benco)
    for name in ("image", "mask", "edge_mask", "shape_mask", "shape", "origin_shape"):
        if name in benco:
            assert ours[name].dtype == benco[name].dtype, name
            assert torch.equal(ours[name], benco[name]), name
    if labels:
        assert ours["label"] == benco["label"]


def test_registered_in_benco():
    assert DATASETS.get("OpenSDIDataset") is OpenSDIDataset


@pytest.mark.parametrize("padding,size,edge,augment", SETTINGS)
def test_equals_benco_mani_dataset_on_export(opensdi_root, mani_export, padding, size, edge, augment):
    kwargs = _kwargs(padding, size, edge, augment)
    ours = OpenSDIDataset(opensdi_root, **kwargs)
    benco = ManiDataset(mani_export, **kwargs)
    assert len(ours) == len(benco) == 100
    position = {file_stem(ours.key(i)): i for i in range(len(ours))}
    for j in range(len(benco)):
        stem = os.path.basename(benco.tp_path[j]).split(".")[0]
        assert stem == os.path.basename(benco.gt_path[j]).split(".")[0]
        i = position[stem]
        # ManiDataset labels every pair 1 unless augmentation recomputes it from the mask.
        _assert_same(_seeded(ours, i, j), _seeded(benco, j, j), labels=augment)


@pytest.mark.parametrize("padding,size,edge,augment", SETTINGS[:2])
def test_equals_benco_json_dataset_on_export(opensdi_root, json_export, padding, size, edge, augment):
    kwargs = _kwargs(padding, size, edge, augment)
    ours = OpenSDIDataset(opensdi_root, **kwargs)
    benco = JsonDataset(json_export, **kwargs)
    assert len(ours) == len(benco)
    for i in range(len(ours)):
        assert os.path.basename(benco.tp_path[i]).split(".")[0] == file_stem(ours.key(i))
        _assert_same(_seeded(ours, i, i), _seeded(benco, i, i), labels=True)


def test_augmented_labels_follow_the_mask(opensdi_root):
    """With copy-move/inpainting forced, reals become fakes exactly as Benco recomputes them."""
    import albumentations as albu
    from IMDLBenCo.transforms import RandomCopyMove

    dataset = OpenSDIDataset(
        opensdi_root,
        generators=["sd15"],
        is_resizing=True,
        output_size=(32, 32),
        common_transforms=albu.Compose([RandomCopyMove(p=1.0)]),
    )
    real = next(i for i in range(len(dataset)) if dataset.label(i) == 0)
    sample = dataset[real]
    assert sample["label"] == 1 and sample["mask"].sum() > 0


def test_same_pixels_as_datasets_image_feature(opensdi_root, tmp_path):
    import datasets

    files = sorted(str(p) for p in (opensdi_root / "data").glob("*.parquet"))
    reference = datasets.load_dataset(
        "parquet", data_files={"train": files}, split="train", cache_dir=str(tmp_path / "cache")
    )
    assert isinstance(reference.features["image"], datasets.Image)
    ours = OpenSDIDataset(files, is_padding=True, output_size=(80, 80))
    position = {ours.key(i): i for i in range(len(ours))}
    pad = get_albu_transforms("pad", output_size=(80, 80))
    assert len(reference) == len(ours)
    for row in reference:
        sample = ours[position[row["key"]]]
        height, width = row["image"].height, row["image"].width
        expected = pad(image=np.array(row["image"].convert("RGB")))["image"]
        assert torch.equal(sample["image"], expected), row["key"]
        mask = sample["mask"][0, :height, :width].numpy()
        if row["label"] == 0:
            assert not mask.any()
        elif row["mask"] is None:
            assert mask.all()
        else:
            truth = np.array(row["mask"].convert("RGB")).mean(axis=2) > 127.5
            assert np.array_equal(mask, truth)
        assert sample["mask"][0, height:, :].sum() == 0 and sample["mask"][0, :, width:].sum() == 0
        assert tuple(sample["origin_shape"].tolist()) == (height, width)


def test_mask_cases(opensdi_root):
    dataset = OpenSDIDataset(opensdi_root, generators="sd2", is_resizing=True, output_size=(64, 64), edge_width=5)
    seen = set()
    for i in range(len(dataset)):
        record = dataset.record(i)
        sample = dataset[i]
        mask, edge = sample["mask"], sample["edge_mask"]
        if record.label == 0:
            case = "real"
            assert not mask.any() and not edge.any()
        elif not record.has_mask:
            case = "whole fake"
            assert mask.all() and not edge.any()
        else:
            case = "edited"
            assert 0 < mask.mean() < 1 and edge.any()
        assert sample["label"] == record.label
        assert sample["name"] == record.key
        seen.add(case)
    assert seen == {"real", "whole fake", "edited"}


def test_filters_and_metadata(opensdi_root):
    everything = OpenSDIDataset(opensdi_root, is_resizing=True, output_size=(32, 32))
    assert everything.generators == GENERATORS
    assert len(everything) == 100
    detection = OpenSDIDataset(opensdi_root, subset="detection", is_resizing=True, output_size=(32, 32))
    assert [detection.key(i) for i in range(len(detection))] == [everything.key(i) for i in range(len(everything))]

    pair = OpenSDIDataset(opensdi_root, generators=["flux", "sd3"], is_resizing=True, output_size=(32, 32))
    assert pair.generators == ["sd3", "flux"]
    assert {pair.generator(i) for i in range(len(pair))} == {"sd3", "flux"}
    assert all(pair.key(i).split("/")[1] == pair.generator(i) for i in range(len(pair)))

    local = OpenSDIDataset(
        opensdi_root, generators=["sd15"], subset="localization", is_resizing=True, output_size=(32, 32)
    )
    assert len(local) == 5
    for i in range(len(local)):
        record = local.record(i)
        assert record.kind == "partial" and record.label == 1 and record.has_mask
        assert local.label(i) == 1 and local.has_mask(i)
        assert record.key.startswith("partial/sd15/fake/") and record.shard.endswith(".parquet")
    assert local.key(-1) == local.key(len(local) - 1)
    with pytest.raises(IndexError):
        local[len(local)]
    assert "subset localization" in str(local) and "length of 5" in str(local)


def test_unknown_generator_lists_present(opensdi_root):
    with pytest.raises(OpenSDIError, match=r"unknown generator\(s\) sd4.*present: sd15, sd2, sdxl, sd3, flux"):
        OpenSDIDataset(opensdi_root, generators=["sd15", "sd4"], is_resizing=True)


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(subset="pixels", is_resizing=True), "unknown subset 'pixels'"),
        (dict(is_resizing=True, edge_width=4), "edge_width must be a positive odd integer"),
        (dict(is_resizing=True, on_error="ignore"), "on_error must be one of raise, skip"),
        (dict(), "exactly one of is_padding and is_resizing"),
        (dict(is_padding=True, is_resizing=True), "exactly one of is_padding and is_resizing"),
    ],
)
def test_bad_arguments(opensdi_root, kwargs, message):
    with pytest.raises(OpenSDIError, match=message):
        OpenSDIDataset(opensdi_root, **kwargs)


def test_sources_file_list_and_glob(opensdi_root):
    files = sorted(str(p) for p in (opensdi_root / "data").glob("sd3-*.parquet"))
    assert len(files) == 2
    by_list = OpenSDIDataset(files, is_resizing=True, output_size=(32, 32))
    by_glob = OpenSDIDataset(str(opensdi_root / "**" / "sd3-*.parquet"), is_resizing=True, output_size=(32, 32))
    by_file = OpenSDIDataset(files[1], is_resizing=True, output_size=(32, 32))
    assert len(by_list) == len(by_glob) == 20 and by_list.generators == ["sd3"]
    assert [by_list.key(i) for i in range(20)] == [by_glob.key(i) for i in range(20)]
    assert 0 < len(by_file) < 20


def test_post_funcs_run_last(opensdi_root):
    calls = []

    def post(data):
        calls.append(sorted(data))
        data["extra"] = data["mask"].sum()

    dataset = OpenSDIDataset(
        opensdi_root, generators=["sd15"], is_resizing=True, output_size=(32, 32), post_funcs=[post]
    )
    sample = dataset[0]
    assert calls == [sorted(["image", "mask", "label", "origin_shape", "shape", "name"])]
    assert torch.equal(sample["extra"], sample["mask"].sum())


def test_pickle_drops_open_files(opensdi_root):
    dataset = OpenSDIDataset(opensdi_root, is_resizing=True, output_size=(32, 32), edge_width=3)
    first = dataset[7]
    assert dataset._reader._files  # a file is open and a row group cached in this process
    clone = pickle.loads(pickle.dumps(dataset))
    assert not clone._reader._files and not clone._reader._groups
    again = clone[7]
    assert again["name"] == first["name"] and torch.equal(again["image"], first["image"])


def test_dataloader_with_two_workers(opensdi_root):
    dataset = OpenSDIDataset(
        opensdi_root, generators=["sd15", "flux"], is_resizing=True, output_size=(48, 48), edge_width=7
    )
    dataset[0]  # open a file before the workers fork
    expected = [dataset[i] for i in range(len(dataset))]
    loader = DataLoader(dataset, batch_size=4, num_workers=2, shuffle=False)
    batches = list(loader)
    names = [n for batch in batches for n in batch["name"]]
    assert names == [e["name"] for e in expected]
    images = torch.cat([b["image"] for b in batches])
    assert torch.equal(images, torch.stack([e["image"] for e in expected]))
    edges = torch.cat([b["edge_mask"] for b in batches])
    assert torch.equal(edges, torch.stack([e["edge_mask"] for e in expected]))
