"""Weight folders (``benco weights export``): the model's weights only, in safetensors, with the
config that rebuilds them; ``load_model`` and ``Predictor`` take the folder, locally or as
``hf://OWNER/REPO[/FOLDER/]``, with the outputs of the checkpoint it came from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

import imdlbenco_maskclip
from imdlbenco_maskclip.checkpoints import export, folder, inspection
from imdlbenco_maskclip.checkpoints.loading import FOLDER, read_checkpoint
from imdlbenco_maskclip.inference.predictor import Predictor
from tests.support.released_layout import (
    COMMIT,
    RELEASED_NAME,
    REPO,
    forward,
    offline_cache,
    same_outputs,
    sha256_of,
)

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture(scope="module")
def exported(released, tmp_path_factory) -> Path:
    prepared = export.prepare(str(released))
    out = tmp_path_factory.mktemp("exported") / "maskclip_tiny"
    folder.write(out, prepared.weights, prepared.config, "# card\n")
    return out


def test_an_exported_folder_holds_the_model_only_and_loads_with_the_files_outputs(released, exported):
    original = imdlbenco_maskclip.load_model(released)
    model_bytes = sum(t.nbytes for t in original.state_dict().values())
    weights_file = exported / folder.WEIGHTS
    assert model_bytes < weights_file.stat().st_size < model_bytes + 100_000  # the header: no optimizer, no scaler
    assert same_outputs(forward(original), forward(imdlbenco_maskclip.load_model(exported)))
    with safe_open(weights_file, "pt") as stored:  # k and v, views of one published projection, stored apart
        assert {"mask_decoder.query_attn.k_proj.weight", "mask_decoder.query_attn.v_proj.weight"} <= set(stored.keys())
    config = json.loads((exported / folder.CONFIG).read_text())
    assert (config["model"], config["model_args"], config["image_size"], config["if_padding"]) == (
        "MaskCLIP",
        {"setting": "tiny"},
        64,
        False,
    )
    assert config["exported_from"] == {
        "checkpoint": str(released),
        "sha256": sha256_of(released),
        "layout": "published",
    }
    assert config["selected_on"].startswith("test: nebula/OpenSDI_test sd15") and config["epoch"] == 13
    stored = read_checkpoint(exported)
    assert (stored.layout, stored.saved.optimizer, stored.saved.epoch) == (FOLDER, None, 13)
    predictor = Predictor.from_checkpoint(exported, device="cpu")
    assert (predictor.image_size, predictor.padding) == (64, False)


def test_a_folder_on_the_hub_loads_from_the_cache_offline(released, exported, tmp_path, monkeypatch):
    files = {name: exported / name for name in (folder.WEIGHTS, folder.CONFIG, folder.CARD)}
    inside = {f"exports/tiny/{name}": path for name, path in files.items()}
    offline_cache(monkeypatch, tmp_path / "hub", REPO, {**inside, RELEASED_NAME: released})
    offline_cache(monkeypatch, tmp_path / "hub", "someone/maskclip-tiny", files)
    expected = forward(imdlbenco_maskclip.load_model(released))
    for reference in (
        f"hf://{REPO}/exports/tiny/",
        "hf://someone/maskclip-tiny",
        f"hf://someone/maskclip-tiny@{COMMIT}",
    ):
        assert same_outputs(expected, forward(imdlbenco_maskclip.load_model(reference))), reference
    source = read_checkpoint(f"hf://{REPO}/exports/tiny/").source
    assert (source["revision"], source["sha256"]) == (COMMIT, sha256_of(exported / folder.WEIGHTS))


def test_a_folder_keeps_what_benco_test_warns_about_and_the_threshold_predictions_use(
    exported, tiny_checkpoint, tmp_path
):
    from imdlbenco_maskclip.evaluation.test_run import selection_warnings

    recorded = read_checkpoint(exported).saved  # from a released file: chosen on OpenSDI_test sd15
    assert recorded.selection_data == {"data_path": "nebula/OpenSDI_test", "rows": ["sd15"]}
    assert selection_warnings(recorded.selection_data, ["nebula/OpenSDI_test"], ["sd15", "sd3"])

    payload = torch.load(tiny_checkpoint, map_location="cpu", weights_only=False)
    chosen = tmp_path / "checkpoint-best.pth"
    torch.save({**payload, "val_threshold": 0.3, "selected_on": "validation: 1% of the training rows"}, chosen)
    prepared = export.prepare(str(chosen))
    folder.write(tmp_path / "out", prepared.weights, prepared.config, "# card\n")
    predictor = Predictor.from_checkpoint(tmp_path / "out", device="cpu")
    assert predictor.threshold == 0.3 == Predictor.from_checkpoint(chosen, device="cpu").threshold
    assert read_checkpoint(tmp_path / "out").saved.selected_on == "validation: 1% of the training rows"
    assert inspection.describe(str(tmp_path / "out"), check=False).facts["threshold"].startswith("0.3 (val_threshold")


def test_a_folder_that_is_not_a_weight_folder_is_named(tmp_path):
    with pytest.raises(imdlbenco_maskclip.common.errors.UserError, match="without model.safetensors and config.json"):
        imdlbenco_maskclip.load_model(tmp_path)


def test_a_local_checkpoint_is_recorded_with_the_sha256_of_its_weights_file(tmp_path):
    """What ``benco predict --format parquet`` records of the weights: a weight folder is
    identified by its ``model.safetensors``; a hub record keeps what the hub said."""
    (tmp_path / folder.WEIGHTS).write_bytes(b"weights")
    recorded = inspection.with_sha256({"checkpoint": str(tmp_path)})
    assert recorded == {"checkpoint": str(tmp_path), "sha256": sha256_of(tmp_path / folder.WEIGHTS)}
    from_hub = {"checkpoint": f"hf://{REPO}/{RELEASED_NAME}", "revision": COMMIT}
    assert inspection.with_sha256(from_hub) == from_hub
