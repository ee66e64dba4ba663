"""``benco weights info|export`` and the released layout through ``benco predict`` and ``benco
test``, from a local path and from the Hugging Face cache offline; a file of an earlier or
foreign layout gets the missing and unexpected keys and the shape mismatches, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet
import pytest
import torch
from PIL import Image
from safetensors import safe_open

import imdlbenco_maskclip
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.common.errors import WeightsMismatch
from imdlbenco_maskclip.host.workarounds import allow_namespace_checkpoints
from tests.support.released_layout import COMMIT, RELEASED_NAME, REPO, forward, same_outputs, sha256_of

REFERENCE = f"hf://{REPO}/{RELEASED_NAME}"


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def clip_file(released) -> Path:
    """The frozen CLIP the released file carries, as an open_clip weights file."""
    allow_namespace_checkpoints()
    model = torch.load(released, weights_only=True)["model"]
    path = released.parent / "open_clip_tiny.bin"
    torch.save({key[len("clip.") :]: value for key, value in model.items() if key.startswith("clip.")}, path)
    return path


def test_info_reads_the_released_layout_and_says_it_loads(released, capsys):
    assert benco.main(["weights", "info", str(released)]) == 0
    shown = capsys.readouterr().out
    assert "published OpenSDI checkpoint" in shown and "setting=tiny" in shown
    assert "optimizer    534 tensors" in shown and "scaler       5 entries, no tensors" in shown
    assert f"sha256       {sha256_of(released)}" in shown and "epoch        13" in shown
    assert "loads        yes" in shown and "frozen CLIP  in the file" in shown
    assert benco.main(["weights", "info", str(released), "--no-check"]) == 0
    assert "loads        not checked (--no-check)" in capsys.readouterr().out


def test_export_without_clip_checks_the_clip_against_its_source(released, clip_file, tmp_path, capsys):
    out = tmp_path / "no_clip"
    assert benco.main(["weights", "export", str(released), str(out), "--without-clip"]) == 2
    assert "the tiny setting has no pretrained CLIP to rebuild it from" in capsys.readouterr().err
    other = tmp_path / "other_clip.bin"
    state = torch.load(clip_file, weights_only=True)
    state["positional_embedding"] = state["positional_embedding"] + 1
    torch.save(state, other)
    assert (
        benco.main(["weights", "export", str(released), str(out), "--without-clip", "--clip_pretrained", str(other)])
        == 2
    )
    assert "1 tensors differ, e.g. clip.model.positional_embedding" in capsys.readouterr().err and not out.exists()
    argv = ["weights", "export", str(released), str(out), "--without-clip", "--clip_pretrained", str(clip_file)]
    assert benco.main(argv) == 0
    assert f"checked bit for bit against {clip_file}" in capsys.readouterr().out
    config = json.loads((out / "config.json").read_text())
    assert config["clip"] == {
        "in_file": False,
        "source": str(clip_file),
        "left_out": "export",
        "verified_against": str(clip_file),
    }
    assert "left out by `--without-clip`" in (out / "README.md").read_text()
    with_clip, without = imdlbenco_maskclip.load_model(released), imdlbenco_maskclip.load_model(out)
    assert without.clip_source == str(clip_file)
    assert same_outputs(forward(with_clip), forward(without))
    assert benco.main(["weights", "info", str(out)]) == 0
    assert f"left out; rebuilt from {clip_file}" in capsys.readouterr().out


def test_a_clip_the_checkpoint_left_out_stays_out_of_the_folder_with_its_source(clip_file, tmp_path, capsys):
    import argparse

    from imdlbenco_maskclip.checkpoints.layout import save_atomic
    from imdlbenco_maskclip.model import build_maskclip

    torch.manual_seed(0)
    options = {"setting": "tiny", "clip_pretrained": str(clip_file)}
    weights = build_maskclip(**options).state_dict()  # as benco train saves it: no frozen CLIP
    assert weights and not any(key.startswith("clip.") for key in weights)
    checkpoint = tmp_path / "checkpoint-best.pth"
    args = argparse.Namespace(image_size=64, if_padding=False, model="MaskCLIP")
    save_atomic({"model": weights, "model_name": "MaskCLIP", "model_args": options, "args": args}, checkpoint)
    out = tmp_path / "folder"
    assert benco.main(["weights", "export", str(checkpoint), str(out)]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["clip"] == {"in_file": False, "source": str(clip_file), "left_out": "checkpoint"}
    with safe_open(out / "model.safetensors", "pt") as stored:
        assert set(stored.keys()) == set(weights)
    assert "left out by the training run" in (out / "README.md").read_text()
    assert same_outputs(forward(imdlbenco_maskclip.load_model(checkpoint)), forward(imdlbenco_maskclip.load_model(out)))
    assert benco.main(["weights", "info", str(out)]) == 0
    assert f"left out; rebuilt from {clip_file}" in capsys.readouterr().out


def test_export_puts_the_protocol_table_in_the_model_card(released, tmp_path):
    results = tmp_path / "opensdi_results.json"
    row = {"pixel_f1": 0.5, "pixel_iou": 0.4, "image_f1": 0.7, "image_acc": 0.75, "n_pixel": 5, "n_images": 20}
    results.write_text(
        json.dumps(
            {
                "model": "MaskCLIP",
                "selected_on": "validation",
                "splits": [{"split": "sd3", **row}],
                "mean": {"split": "mean", **row},
            }
        )
    )
    assert benco.main(["weights", "export", str(released), str(tmp_path / "out"), "--results", str(results)]) == 0
    card = (tmp_path / "out" / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: imdlbenco-maskclip\n") and "- arxiv:2503.19653" in card
    assert "datasets:\n- nebula/OpenSDI_train" in card
    assert "## Results on the OpenSDI protocol" in card and "| sd3 " in card and "| mean " in card
    assert "Selected on: validation." in card


@pytest.fixture(scope="module")
def earlier_variant(released) -> Path:
    """A MaskCLIP file of the published family whose keys and shapes differ from the network."""
    allow_namespace_checkpoints()
    payload = torch.load(released, weights_only=True)
    model = payload["model"]
    del model["aggregator.mask_decoder.predict.bias"]
    model["aggregator.side_adapter.weight"] = torch.zeros(3)
    model["aggregator.fusion_layers.layer_1.query_proj.weight"] = torch.zeros(4, 4)
    path = released.parent / "SideCLIP_sd15_checkpoint-16.pth"
    torch.save(payload, path)
    return path


def test_an_earlier_layout_is_refused_with_what_differs(earlier_variant, capsys, tmp_path):
    expected = [
        "1 missing keys: mask_decoder.predict.bias",
        "1 unexpected keys: aggregator.side_adapter.weight",
        "1 shape mismatches: fusions.1.attn.q_proj.weight (4, 4) (the model's: (96, 96))",
    ]
    with pytest.raises(WeightsMismatch) as error:
        imdlbenco_maskclip.load_model(earlier_variant)
    assert all(part in str(error.value) for part in expected)
    assert benco.main(["weights", "info", str(earlier_variant)]) == 1
    shown = capsys.readouterr().out
    assert all(part in shown for part in expected), shown
    assert benco.main(["predict", "--checkpoint", str(earlier_variant), str(earlier_variant), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert all(part in err for part in expected) and "Traceback" not in err
    assert benco.main(["weights", "export", str(earlier_variant), str(tmp_path / "out")]) == 2
    assert not (tmp_path / "out").exists()


def test_benco_predict_takes_a_hub_reference_offline_with_the_local_files_outputs_and_records_it(
    released, hub_cache, tmp_path
):
    photo = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(photo)
    masks = {}
    for name, checkpoint in (("local", str(released)), ("hub", REFERENCE)):
        argv = [
            "predict",
            "--checkpoint",
            checkpoint,
            str(photo),
            "--device",
            "cpu",
            "--output_dir",
            str(tmp_path / name),
        ]
        assert benco.main(argv) == 0
        masks[name] = json.loads((tmp_path / name / "predictions.json").read_text())[0]
        masks[name].pop("mask")
    assert masks["local"] == masks["hub"]
    assert np.array_equal(
        np.asarray(Image.open(tmp_path / "local/masks/photo.png")),
        np.asarray(Image.open(tmp_path / "hub/masks/photo.png")),
    )
    argv = ["predict", "--checkpoint", REFERENCE, str(photo), "--device", "cpu", "--format", "parquet"]
    assert benco.main([*argv, "--masks", "none", "--output_dir", str(tmp_path / "parts")]) == 0
    part = next((tmp_path / "parts" / "predictions").glob("part-*.parquet"))
    facts = json.loads(pyarrow.parquet.read_schema(part).metadata[b"imdlbenco_maskclip"])
    assert facts["source"] == {
        "checkpoint": REFERENCE,
        "reference": REFERENCE,
        "revision": COMMIT,
        "sha256": sha256_of(released),
    }


@pytest.mark.slow  # a benco test run
def test_benco_test_of_a_hub_file_writes_under_opensdi_results_and_records_it(
    hub_cache, released, tmp_path, monkeypatch
):
    from dataset_adapters.synthetic import write_synthetic_opensdi

    data = tmp_path / "data"
    write_synthetic_opensdi(data, generators=("sd3",), n_per_class=1, image_size=64, seed=5)
    monkeypatch.chdir(tmp_path)
    argv = ["test", "--config", "opensdi_test", "--checkpoint", REFERENCE, "--test_data_path", str(data)]
    assert benco.main([*argv, "--generators", "sd3", "--device", "cpu", "--num_workers", "0"]) == 0
    results_dir = tmp_path / "opensdi_results" / Path(RELEASED_NAME).stem
    results = json.loads((results_dir / "opensdi_results.json").read_text())
    assert results["checkpoint"] == REFERENCE
    assert results["checkpoint_source"] == {"reference": REFERENCE, "revision": COMMIT, "sha256": sha256_of(released)}
    assert results["selected_on"].startswith("test: nebula/OpenSDI_test sd15")
    assert f"revision `{COMMIT}`" in (results_dir / "opensdi_results.md").read_text()
    report = (results_dir / "opensdi_report.html").read_text()
    assert COMMIT in report and sha256_of(released) in report and "64 (resized)" in report
    assert not any(hub_cache.rglob("opensdi_results.json"))


def test_a_released_file_is_marked_as_selected_on_opensdi_test_sd15(released):
    from imdlbenco_maskclip.checkpoints.loading import read_checkpoint
    from imdlbenco_maskclip.evaluation.test_run import selection_warnings

    saved = read_checkpoint(released).saved
    assert saved.selected_on.startswith("test: nebula/OpenSDI_test sd15")
    notes = selection_warnings(saved.selection_data, ["nebula/OpenSDI_test"], ["sd15", "sd2", "flux"])
    assert len(notes) == 1 and "its sd15 row is not a held-out result" in notes[0]
