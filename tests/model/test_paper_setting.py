"""The paper setting's real build: parameter counts, checkpoint size, MAE and SAM weights.

The model is built once for this module (random CLIP, side network from a synthesized MAE
checkpoint written the way the official file is, loaded through ``side_weights``). MAE and
SAM checkpoints come from timm's ViT-B/16 and segment-anything's own ``build_sam_vit_b``, so
their key names and shapes are the real ones.
"""

from __future__ import annotations

import os

import open_clip
import pytest
import timm
import torch
import torch.nn.functional as F

from imdlbenco_maskclip.common.errors import SourceNotFound
from imdlbenco_maskclip.model import MaskCLIP, build_maskclip
from imdlbenco_maskclip.model.settings import SETTINGS
from imdlbenco_maskclip.model.side_vit import build_side_vit
from imdlbenco_maskclip.model.weights import create_clip, load_side_weights

pytestmark = pytest.mark.slow  # full-size models

DEVICE = torch.device(os.environ.get("MASKCLIP_TEST_DEVICE", "cpu"))

PUBLISHED = {
    "total": 546_828_738,
    "clip": 427_616_513,
    "trainable": 119_212_225,
    "side_vit": 85_856_256,
    "fusion": 22_068_480,
    "decoder": 6_088_385,
    "text_projection": 196_864,
    "detection_head": 4_986_880,
    "prompts": 15_360,
}


@pytest.fixture(scope="module")
def mae_file(tmp_path_factory):
    """``mae_pretrain_vit_base.pth`` as MAE releases it: ``{'model': <timm ViT-B/16 encoder>}``."""
    torch.manual_seed(0)
    encoder = timm.create_model("vit_base_patch16_224", pretrained=False, num_classes=0)
    state = encoder.state_dict()
    assert state["pos_embed"].shape == (1, 197, 768) and "blocks.0.mlp.fc1.weight" in state and "norm.weight" in state
    path = tmp_path_factory.mktemp("mae") / "mae_pretrain_vit_base.pth"
    torch.save({"model": state}, path)
    return path


@pytest.fixture(scope="module")
def sam_file(tmp_path_factory):
    """``sam_vit_b_01ec64.pth`` as SAM releases it: a flat state dict of the whole SAM ViT-B."""
    from segment_anything import build_sam_vit_b

    torch.manual_seed(1)
    state = build_sam_vit_b(checkpoint=None).state_dict()
    with torch.no_grad():
        for key, value in state.items():
            if key.endswith(("rel_pos_h", "rel_pos_w")):
                value.normal_()
    assert state["image_encoder.blocks.2.attn.rel_pos_h"].shape == (127, 64)
    assert state["image_encoder.blocks.0.attn.rel_pos_h"].shape == (27, 64)
    path = tmp_path_factory.mktemp("sam") / "sam_vit_b_01ec64.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def paper(mae_file):
    torch.manual_seed(0)
    return build_maskclip("paper", clip_pretrained="none", side_init="mae", side_weights=str(mae_file))


def test_parameter_counts_are_the_published_models_exactly(paper):
    counts = paper.parameter_counts()
    assert counts == PUBLISHED
    assert all(not p.requires_grad for p in paper.clip.parameters())
    assert paper.side_vit.pos_embed.shape == (1, 197, 768) and paper.side_vit.pos_embed.requires_grad


def test_checkpoint_without_the_frozen_clip_is_477_mb(paper):
    state = paper.state_dict()
    trainable_bytes = sum(v.numel() * v.element_size() for k, v in state.items() if not k.startswith("clip."))
    assert round(trainable_bytes / 1e6) == 477  # the README's figure; the published code writes all 2.19 GB
    assert round(4 * PUBLISHED["total"] / 1e9, 2) == 2.19
    assert {k for k in state if not k.startswith("clip.")} == {
        f"{name}" for name, p in paper.named_parameters() if p.requires_grad
    }


def test_mae_weights_are_remapped_onto_the_side_network(paper, mae_file):
    report = paper.weights_report
    assert report.missing == [] and report.unexpected == []
    assert sorted(report.unused) == ["cls_token", "norm.bias", "norm.weight"]
    assert len(report.initialized) == 24 and all("rel_pos" in k for k in report.initialized)
    mae = torch.load(mae_file, weights_only=True)["model"]
    side = paper.side_vit.state_dict()
    assert torch.equal(side["blocks.3.mlp.lin1.weight"], mae["blocks.3.mlp.fc1.weight"])
    assert torch.equal(side["blocks.11.mlp.lin2.bias"], mae["blocks.11.mlp.fc2.bias"])
    assert torch.equal(side["blocks.5.attn.qkv.weight"], mae["blocks.5.attn.qkv.weight"])
    assert torch.equal(side["pos_embed"], mae["pos_embed"])  # MAE's own 1 x 197 x 768 table, as published
    assert (side["blocks.2.attn.rel_pos_h"] == 0).all()


def test_side_positions_are_maes_grid_resized_bicubically_in_every_forward(paper):
    """The class slot is dropped and the 14 x 14 grid resized (bicubic, align_corners=False,
    no antialiasing) to the token grid; gradients reach the stored 14 x 14 table."""
    side = paper.side_vit
    table = side.pos_embed[:, 1:].detach().reshape(1, 14, 14, 768).permute(0, 3, 1, 2)
    expected = F.interpolate(table, size=(32, 32), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    assert torch.allclose(side.positions((32, 32)), expected, atol=1e-6)
    side.positions((4, 6)).sum().backward()
    assert side.pos_embed.grad[:, 1:].abs().sum() > 0 and (side.pos_embed.grad[:, 0] == 0).all()
    side.pos_embed.grad = None


def test_side_layer_norms_have_the_published_eps(paper):
    assert {m.eps for m in paper.side_vit.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-6}
    fusion = paper.fusions[0]
    assert (fusion.clip_norm.eps, fusion.out_norm.eps) == (1e-6, 1e-5)


def test_sam_weights_are_remapped_onto_the_paper_sam_side_network(sam_file):
    torch.manual_seed(2)
    settings = SETTINGS["paper_sam"].side
    side_vit = build_side_vit(settings)
    report = load_side_weights(side_vit, settings, "sam", str(sam_file))
    assert report.missing == [] and report.unexpected == [] and report.initialized == []
    assert any(k.startswith("prompt_encoder.") for k in report.unused) and any(
        k.startswith("mask_decoder.") for k in report.unused
    )
    assert any(k.startswith("image_encoder.neck.") for k in report.unused)
    sam = torch.load(sam_file, weights_only=True)
    side = side_vit.state_dict()
    assert torch.equal(side["blocks.7.mlp.lin1.weight"], sam["image_encoder.blocks.7.mlp.lin1.weight"])
    assert side["blocks.2.attn.rel_pos_h"].shape == (63, 64)
    assert torch.equal(side["blocks.0.attn.rel_pos_w"], sam["image_encoder.blocks.0.attn.rel_pos_w"])
    table = sam["image_encoder.blocks.5.attn.rel_pos_w"]
    expected = F.interpolate(table.t()[None], size=63, mode="linear")[0].t()
    assert torch.allclose(side["blocks.5.attn.rel_pos_w"], expected)
    sam_grid = sam["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    expected = F.interpolate(sam_grid, size=(32, 32), mode="bicubic", align_corners=False, antialias=True)
    assert side["pos_embed"].shape == (1, 1024, 768)
    assert torch.allclose(side["pos_embed"], expected.permute(0, 2, 3, 1).reshape(1, 1024, 768), atol=1e-5)


def test_paper_forward_on_a_small_non_square_image(paper):
    paper.eval()
    with torch.no_grad():
        out = paper(image=torch.randn(1, 3, 128, 192))
    assert out["pred_mask"].shape == (1, 1, 128, 192)
    assert torch.isfinite(out["pred_mask"]).all() and 0 <= out["pred_label"].item() <= 1


def test_base_setting_builds_on_clip_vit_b_16():
    torch.manual_seed(0)
    base = MaskCLIP("base").eval()
    counts = base.parameter_counts()
    assert counts["clip"] == sum(p.numel() for p in open_clip.create_model("ViT-B-16").parameters())
    assert counts["side_vit"] == PUBLISHED["side_vit"]
    assert counts["detection_head"] == 4 * (768 * 768 + 768) + 2 * 768 + 768 * 512
    with torch.no_grad():
        out = base(image=torch.randn(2, 3, 64, 96))
    assert out["pred_mask"].shape == (2, 1, 64, 96) and out["pred_label"].shape == (2,)


def test_side_weight_download_failure_names_file_url_and_flag(paper, tmp_path):
    saved_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    try:
        with pytest.raises(SourceNotFound) as caught:
            load_side_weights(
                paper.side_vit, SETTINGS["paper"].side, "mae", "http://127.0.0.1:9/mae_pretrain_vit_base.pth"
            )
    finally:
        torch.hub.set_dir(saved_dir)
    message = str(caught.value)
    assert caught.value.option == "side_weights"
    assert "mae_pretrain_vit_base.pth" in message and "--side_weights /path/to/mae_pretrain_vit_base.pth" in message
    with pytest.raises(FileNotFoundError, match="no file .*sam_vit_b_01ec64.pth from https://dl.fbaipublicfiles.com"):
        load_side_weights(paper.side_vit, SETTINGS["paper"].side, "sam", str(tmp_path / "missing.pth"))


def test_clip_download_failure_names_the_file_and_flag(monkeypatch):
    def offline(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(SourceNotFound) as caught:
        create_clip(SETTINGS["paper"].clip, "openai")
    message = str(caught.value)
    assert "--clip_pretrained /path/to/open_clip_pytorch_model.bin" in message
    assert "https://huggingface.co/timm/vit_large_patch14_clip_224.openai" in message
    with pytest.raises(ValueError, match="tags: .*openai"):
        create_clip(SETTINGS["paper"].clip, "no-such-tag")
    with pytest.raises(ValueError, match="another activation or image statistics"):
        create_clip(SETTINGS["paper"].clip, "laion2b_s32b_b82k")


@pytest.mark.parametrize(
    "setting, trainable, frozen",
    [("paper_sam", 119_847_361, 427_616_513), ("base", 115_535_553, 149_620_737), ("tiny", 672_569, 3_525_825)],
)
def test_the_readmes_parameter_counts_of_the_other_settings(setting, trainable, frozen):
    counts = MaskCLIP(setting).parameter_counts()
    assert (counts["trainable"], counts["clip"]) == (trainable, frozen)
