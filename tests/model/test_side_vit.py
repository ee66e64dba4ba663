"""The side ViT computes segment-anything's ViTDet attention and blocks exactly (through SDPA)."""

from __future__ import annotations

import os

import pytest
import torch
from segment_anything.modeling.image_encoder import Attention, Block

from imdlbenco_maskclip.model.settings import SETTINGS
from imdlbenco_maskclip.model.side_vit import SideAttention, SideBlock, build_side_vit

DEVICE = torch.device(os.environ.get("MASKCLIP_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":  # compare in true fp32, not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def randomize(module: torch.nn.Module, seed: int) -> None:
    """Non-zero weights everywhere, relative-position tables included (SAM zero-initializes them)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in module.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)


@pytest.mark.parametrize("grid", [(14, 14), (8, 12), (32, 32)])
def test_sdpa_attention_equals_segment_anythings_attention(grid):
    sam = Attention(96, num_heads=3, use_rel_pos=True, input_size=grid).to(DEVICE)
    randomize(sam, 0)
    ours = SideAttention(96, num_heads=3, use_rel_pos=True, input_size=grid).to(DEVICE)
    ours.load_state_dict(sam.state_dict())
    x = torch.randn(2, *grid, 96, device=DEVICE)
    expected = sam(x)
    assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


@pytest.mark.parametrize(
    "window, grid",
    [(14, (32, 32)), (14, (20, 24)), (14, (14, 14)), (4, (6, 10)), (0, (20, 24)), (0, (32, 32))],
)
def test_block_equals_segment_anythings_block_windowed_and_global(window, grid):
    """Window blocks pad to whole windows (the q/k/v of padding equal the projection's bias);
    global blocks run on the full grid; drop path is the identity in eval mode."""
    sam = Block(96, 3, use_rel_pos=True, window_size=window, input_size=(32, 32)).to(DEVICE).eval()
    randomize(sam, 1)
    ours = SideBlock(96, 3, 4.0, window, (32, 32), drop_path=0.1).to(DEVICE).eval()
    assert ours.load_state_dict(sam.state_dict()).missing_keys == []
    x = torch.randn(2, *grid, 96, device=DEVICE)
    expected = sam(x)
    assert torch.allclose(ours(x), expected, rtol=1e-4, atol=1e-4 * expected.abs().max().item())


def test_block_gradients_equal_segment_anythings():
    sam = Block(96, 3, use_rel_pos=True, window_size=4, input_size=(8, 8)).to(DEVICE).eval()
    randomize(sam, 2)
    ours = SideBlock(96, 3, 4.0, 4, (8, 8), drop_path=0.0).to(DEVICE).eval()
    ours.load_state_dict(sam.state_dict())
    x = torch.randn(2, 6, 10, 96, device=DEVICE)
    sam(x).square().sum().backward()
    ours(x).square().sum().backward()
    for (name, a), b in zip(sam.named_parameters(), ours.parameters()):
        assert torch.allclose(b.grad, a.grad, rtol=1e-3, atol=1e-4 * a.grad.abs().max().item()), name


def test_side_vit_has_segment_anythings_names_and_takes_any_grid():
    side = build_side_vit(SETTINGS["tiny"].side).to(DEVICE).eval()
    names = set(side.state_dict())
    assert {
        "pos_embed",
        "patch_embed.proj.weight",
        "blocks.0.attn.qkv.weight",
        "blocks.0.attn.rel_pos_h",
        "blocks.0.mlp.lin1.weight",
    } <= names
    assert side.blocks[1].window_size == 0 and side.blocks[0].window_size == 4
    for size in [(128, 128), (64, 160), (48, 32)]:
        out = side(torch.randn(1, 3, *size, device=DEVICE))
        assert out.shape == (1, size[0] // 16, size[1] // 16, 96)


def test_drop_path_rates_rise_to_0_1():
    side = build_side_vit(SETTINGS["paper"].side)
    rates = [block.drop_path for block in side.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)


@pytest.mark.parametrize("batch", [1, 6])
def test_stochastic_depth_computes_kept_samples_only_and_matches_droppath(batch):
    """In training each residual branch is dropped per sample (output = input) or kept and
    scaled by 1/(1-p), exactly as DropPath; parameters always join the graph."""
    torch.manual_seed(3)
    block = SideBlock(32, 2, 2.0, 4, (8, 8), drop_path=0.5).to(DEVICE)
    randomize(block, 3)
    x = torch.randn(batch, 6, 6, 32, device=DEVICE)
    block.eval()
    attn_out = x + block._attention_branch(x)
    seen = set()
    block.train()
    for seed in range(40):
        torch.manual_seed(seed)
        out = block._residual(x, block._attention_branch)
        for i in range(batch):
            if torch.allclose(out[i], x[i]):
                seen.add("dropped")
            else:
                assert torch.allclose(out[i], x[i] + (attn_out[i] - x[i]) / 0.5, atol=1e-5)
                seen.add("kept")
        block.zero_grad(set_to_none=True)
        block(x).sum().backward()
        assert all(p.grad is not None for p in block.parameters())
    assert seen == {"dropped", "kept"}
