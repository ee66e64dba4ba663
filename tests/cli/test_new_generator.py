"""A generator the code has never heard of goes through info, export, train and test unchanged,
listed after the known ones (OpenSDI means to add generators)."""

from __future__ import annotations

import json

import pytest

from dataset_adapters.synthetic import write_synthetic_opensdi
from dataset_adapters.vocabulary import KNOWN_GENERATORS, generator_order
from imdlbenco_maskclip.cli import benco


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("new_generator")
    write_synthetic_opensdi(root, generators=("sd35", "sd15"), n_per_class=2, image_size=64, seed=9)
    return root


def test_unknown_generators_come_after_the_known_ones():
    assert "sd35" not in KNOWN_GENERATORS
    assert generator_order(["sd35", "flux", "aurora", "sd15"]) == ["sd15", "flux", "aurora", "sd35"]


def test_info_export_train_and_test_take_a_new_generator(shards, tmp_path, capsys):
    assert benco.main(["opensdi", "info", str(shards)]) == 0
    info = capsys.readouterr().out
    assert "sd35" in info and info.index("sd15") < info.index("sd35")

    exported = tmp_path / "sd35.json"
    assert (
        benco.main(["opensdi", "export", str(shards), str(exported), "--format", "json", "--generators", "sd35"]) == 0
    )
    entries = json.loads(exported.read_text())
    assert len(entries) == 8 and all("sd35" in image for image, _ in entries)

    run = tmp_path / "run"
    assert (
        benco.main(
            [
                "train",
                "--model",
                "MaskCLIP",
                "--setting",
                "tiny",
                "--data_path",
                str(shards),
                "--generators",
                "sd35",
                "--image_size",
                "64",
                "--batch_size",
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
                str(run),
            ]
        )
        == 0
    )
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(run / "checkpoint-last.pth"),
                "--test_data_path",
                str(shards),
                "--image_size",
                "64",
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--output_dir",
                str(tmp_path / "results"),
            ]
        )
        == 0
    )
    results = json.loads((tmp_path / "results" / "opensdi_results.json").read_text())
    assert [row["split"] for row in results["splits"]] == ["sd15", "sd35"]
    assert results["splits"][1]["n_images"] == 8 and results["splits"][1]["n_pixel"] == 2
