"""Checkpoints of the published OpenSDI ``train.py`` through ``load_model``, ``benco test`` and
``benco predict``, offline.

``data/published_maskclip_vitl_shapes.json`` lists every key and shape of the published
``MaskCLIP('ViTL')`` state dict (read off its model definitions: OpenAI ``clip`` naming for the
frozen CLIP, ``aggregator.*``, ``cls_aggregator.*``, ``prompt_learner.ctx_pos/ctx_neg``). The
test writes a checkpoint in Benco's layout with random values under those names and checks
that every tensor lands where it belongs.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

import imdlbenco_maskclip
from imdlbenco_maskclip.checkpoints.layout import TrainingState
from imdlbenco_maskclip.checkpoints.loading import PUBLISHED, Checkpoint, build_from_checkpoint
from imdlbenco_maskclip.cli import benco
from imdlbenco_maskclip.model.maskclip import MaskCLIP
from imdlbenco_maskclip.model.published import from_published
from imdlbenco_maskclip.model.settings import SETTINGS

pytestmark = pytest.mark.slow  # full-size published model: a 2.2 GB file

SHAPES = json.loads(
    (Path(__file__).resolve().parents[1] / "support" / "data" / "published_maskclip_vitl_shapes.json").read_text()
)


@pytest.fixture(scope="module")
def published_state() -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return {key: torch.randn(shape, generator=generator) for key, shape in SHAPES.items()}


@pytest.fixture(scope="module")
def published_file(published_state, tmp_path_factory) -> Path:
    """As the published ``train.py`` saves it: Benco's ``misc.save_model`` dict."""
    path = tmp_path_factory.mktemp("published") / "checkpoint-49.pth"
    args = argparse.Namespace(model="MaskCLIP", model_setting_name="ViTL", lr=1e-4, batch_size=16, image_size=512)
    torch.save({"model": published_state, "epoch": 49, "args": args, "optimizer": {}, "scaler": {}}, path)
    return path


@pytest.fixture(scope="module")
def offline():
    """Any attempt to fetch CLIP, MAE or SAM weights fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download weights")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(open_clip.factory, "download_pretrained", refuse)
        patch.setattr(torch.hub, "load_state_dict_from_url", refuse)
        yield


@pytest.fixture(scope="module")
def loaded(published_file, offline) -> MaskCLIP:
    """The published file through ``load_model``, once for the module (a 2.2 GB read)."""
    return imdlbenco_maskclip.load_model(published_file)


def test_the_published_file_loads_into_the_published_parameter_count(loaded):
    """Every published tensor is a parameter of the loaded model, and it has the published
    model's counts: 546,828,738 in all, 119,212,225 of them trained."""
    assert sum(p.numel() for p in loaded.parameters()) == sum(int(np.prod(s)) for s in SHAPES.values()) == 546_828_738
    assert sum(p.numel() for p in loaded.parameters() if p.requires_grad) == 119_212_225


def test_every_published_tensor_lands_where_it_belongs(published_state, loaded):
    mapped = from_published(published_state, SETTINGS["paper"])
    model = loaded
    assert set(mapped) == set(model.state_dict())
    assert len(mapped) == len(published_state) - 2 + 1 + 2  # ctx pair -> contexts; to_kv weight, bias -> k, v
    p = published_state

    def same(ours: torch.Tensor, key: str) -> bool:
        return torch.equal(ours.detach(), p[key].reshape(ours.shape))

    visual = model.clip.model.visual
    assert same(visual.transformer.resblocks[5].mlp.c_fc.weight, "clip.visual.transformer.resblocks.5.mlp.c_fc.weight")
    assert same(visual.transformer.resblocks[23].ln_2.bias, "clip.visual.transformer.resblocks.23.ln_2.bias")
    assert same(visual.class_embedding, "clip.visual.class_embedding") and same(visual.proj, "clip.visual.proj")
    assert same(model.clip.model.token_embedding.weight, "clip.token_embedding.weight")
    assert same(
        model.clip.model.transformer.resblocks[11].attn.in_proj_weight,
        "clip.transformer.resblocks.11.attn.in_proj_weight",
    )
    assert same(model.clip.model.text_projection, "clip.text_projection")
    assert torch.equal(model.prompts.contexts[0], p["prompt_learner.ctx_neg"][0])  # real
    assert torch.equal(model.prompts.contexts[1], p["prompt_learner.ctx_pos"][0])  # fake
    side = model.side_vit
    assert same(side.pos_embed, "aggregator.vit_model.pos_embed")
    assert same(side.patch_embed.proj.weight, "aggregator.vit_model.patch_embed.proj.weight")
    assert same(side.blocks[3].mlp.lin1.weight, "aggregator.vit_model.blocks.3.mlp.fc1.weight")
    assert same(side.blocks[11].mlp.lin2.bias, "aggregator.vit_model.blocks.11.mlp.fc2.bias")
    assert same(side.blocks[2].attn.rel_pos_h, "aggregator.vit_model.blocks.2.attn.rel_pos_h")
    assert same(side.blocks[0].norm1.weight, "aggregator.vit_model.blocks.0.norm1.weight")
    for tap, block in enumerate(range(1, 8)):  # fusion after side block B reads tap B - 1
        fusion, prefix = model.fusions[tap], f"aggregator.fusion_layers.layer_{block}."
        assert same(fusion.clip_proj.weight, prefix + "channel_adjust.0.weight")  # 1x1 conv -> linear
        assert same(fusion.clip_norm.bias, prefix + "channel_adjust.1.bias")
        assert same(fusion.attn.q_proj.weight, prefix + "query_proj.weight")
        assert same(fusion.attn.k_proj.bias, prefix + "key_proj.bias")
        assert same(fusion.attn.v_proj.weight, prefix + "value_proj.weight")
        assert same(fusion.attn.out_proj.weight, prefix + "output_proj.0.weight")
        assert same(fusion.out_norm.weight, prefix + "output_proj.1.weight")
    decoder, prefix = model.mask_decoder, "aggregator.mask_decoder."
    assert same(decoder.scales[0][0].weight, prefix + "stages.0.0.weight")
    assert same(decoder.scales[0][1].weight, prefix + "stages.0.1.weight")
    assert same(decoder.scales[0][3].weight, prefix + "stages.0.3.weight")
    assert same(decoder.laterals[0][0].weight, prefix + "stages.0.4.weight")
    assert same(decoder.laterals[0][3].bias, prefix + "stages.0.7.bias")
    assert same(decoder.scales[1].weight, prefix + "stages.1.0.weight")
    assert same(decoder.laterals[1][2].weight, prefix + "stages.1.3.weight")
    assert same(decoder.laterals[2][0].weight, prefix + "stages.2.0.weight")
    assert same(decoder.laterals[3][0].weight, prefix + "stages.3.1.weight")
    assert same(decoder.laterals[3][3].weight, prefix + "stages.3.4.weight")
    assert same(decoder.fuse.weight, prefix + "linear_fuse.weight") and same(
        decoder.norm.weight, prefix + "norm.weight"
    )
    assert same(decoder.predict.bias, prefix + "predict.bias")
    assert same(decoder.query_proj.weight, "aggregator.text_projection.weight")
    assert same(decoder.query_attn.q_proj.weight, prefix + "to_q.weight")
    assert torch.equal(decoder.query_attn.k_proj.weight, p[prefix + "to_kv.weight"][:256])
    assert torch.equal(decoder.query_attn.v_proj.bias, p[prefix + "to_kv.bias"][256:])
    assert same(decoder.query_attn.out_proj.weight, prefix + "proj.weight")
    head = model.detection_head
    assert same(head.attn.in_proj_weight, "cls_aggregator.layers.0.multihead_attn.in_proj_weight")
    assert same(head.attn.out_proj.bias, "cls_aggregator.layers.0.multihead_attn.out_proj.bias")
    assert same(head.norm.weight, "cls_aggregator.layers.0.layer_norm.weight")
    assert same(head.proj.weight, "cls_aggregator.projector.0.weight")


def test_a_key_with_no_place_is_named(published_state, published_file):
    state = {**published_state, "aggregator.fusion_layers.layer_9.query_proj.weight": torch.zeros(1)}
    extra = Checkpoint(str(published_file), PUBLISHED, "MaskCLIP", {"setting": "paper"}, TrainingState(state))
    with pytest.raises(ValueError, match="1 unexpected keys: aggregator.fusion_layers.layer_9.query_proj.weight"):
        build_from_checkpoint(extra)


def test_load_model_takes_the_published_file_offline(loaded, published_state):
    model = loaded
    assert isinstance(model, MaskCLIP) and not model.training
    assert model.clip_source == "none" and any(k.startswith("clip.") for k in model.state_dict())
    assert torch.equal(model.clip.model.visual.conv1.weight, published_state["clip.visual.conv1.weight"])
    with torch.no_grad():
        out = model(image=torch.randn(1, 3, 64, 64))
    assert out["pred_mask"].shape == (1, 1, 64, 64) and 0 <= out["pred_label"].item() <= 1


def test_a_missing_key_is_an_error_that_names_it(published_state, published_file):
    state = {k: v for k, v in published_state.items() if k != "aggregator.mask_decoder.predict.bias"}
    incomplete = Checkpoint(str(published_file), PUBLISHED, "MaskCLIP", {"setting": "paper"}, TrainingState(state))
    with pytest.raises(ValueError, match="1 missing keys: mask_decoder.predict.bias"):
        build_from_checkpoint(incomplete)


@pytest.fixture(scope="module")
def small_test_split(tmp_path_factory) -> Path:
    """One image of each kind (entire/partial x real/fake) for sd3: the protocol, cheaply."""
    from dataset_adapters.synthetic import write_synthetic_opensdi

    root = tmp_path_factory.mktemp("small")
    write_synthetic_opensdi(root, generators=("sd3",), n_per_class=1, image_size=64, seed=5)
    return root


def test_benco_predict_and_test_take_the_published_file_with_no_extra_flags(
    published_file, small_test_split, tmp_path, capsys, offline
):
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 56, 3), dtype=np.uint8)).save(image)
    predictions = tmp_path / "predictions"
    assert (
        benco.main(
            [
                "predict",
                "--checkpoint",
                str(published_file),
                str(image),
                "--image_size",
                "64",
                "--device",
                "cpu",
                "--output_dir",
                str(predictions),
            ]
        )
        == 0
    )
    assert Image.open(predictions / "masks" / "photo.png").size == (56, 40)
    results = tmp_path / "results"
    assert (
        benco.main(
            [
                "test",
                "--checkpoint",
                str(published_file),
                "--test_data_path",
                str(small_test_split),
                "--image_size",
                "64",
                "--device",
                "cpu",
                "--num_workers",
                "0",
                "--output_dir",
                str(results),
            ]
        )
        == 0
    )
    table = json.loads((results / "opensdi_results.json").read_text())
    assert "sd3" in json.dumps(table)
    assert "MaskCLIP" in capsys.readouterr().out
