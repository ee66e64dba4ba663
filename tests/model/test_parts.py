"""Each part of the model computes the published math: every fast path equals the plain computation."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from segment_anything.modeling.common import LayerNorm2d

from imdlbenco_maskclip.model import attention
from imdlbenco_maskclip.model.attention import MultiHeadAttention, attend
from imdlbenco_maskclip.model.detection_head import DetectionHead
from imdlbenco_maskclip.model.fusion import ClipToSideFusion
from imdlbenco_maskclip.model.mask_decoder import ChannelNorm, MaskDecoder, PointwiseConv, TextQueryAttention

DEVICE = torch.device(os.environ.get("MASKCLIP_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":  # compare in true fp32, not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def close(a: torch.Tensor, b: torch.Tensor, tolerance: float = 1e-5) -> bool:
    return torch.allclose(a, b, rtol=tolerance, atol=tolerance * max(1.0, b.abs().max().item()))


def plain_attention(attn: MultiHeadAttention, query: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """``nn.MultiheadAttention`` with the same weights."""
    dim = query.shape[-1]
    reference = torch.nn.MultiheadAttention(dim, attn.heads, batch_first=True).to(query.device)
    with torch.no_grad():
        reference.in_proj_weight.copy_(torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]))
        reference.in_proj_bias.copy_(torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]))
        reference.out_proj.load_state_dict(attn.out_proj.state_dict())
    return reference(query, context, context, need_weights=False)[0]


def test_multi_head_attention_equals_torchs():
    torch.manual_seed(0)
    attn = MultiHeadAttention(64, 8).to(DEVICE)
    query, context = torch.randn(2, 5, 64, device=DEVICE), torch.randn(2, 40, 64, device=DEVICE)
    assert close(attn(query, context), plain_attention(attn, query, context))
    assert close(attn(query), plain_attention(attn, query, query))


def test_cpu_bf16_attention_without_gradient_is_sdpas_function_in_chunks(monkeypatch):
    """The explicit bf16 path computes what SDPA computes (to bf16 rounding), in any number
    of query chunks, and is taken only where it is meant to be."""
    torch.manual_seed(4)
    q, k, v = (torch.randn(2, 3, 50, 16) for _ in range(3))
    exact = F.scaled_dot_product_attention(q, k, v, scale=0.3)
    low = [t.bfloat16() for t in (q, k, v)]
    with torch.no_grad():
        whole = attend(*low, scale=0.3)
        monkeypatch.setattr(attention, "SCORE_BUDGET", 2 * 3 * 50 * 7)  # 7 query rows per chunk
        chunked = attend(*low, scale=0.3)
    assert whole.dtype is torch.bfloat16 and torch.equal(whole, chunked)
    assert (whole.float() - exact).abs().max() < 0.03
    with torch.no_grad():  # fp32: SDPA itself
        assert torch.equal(attend(q, k, v), F.scaled_dot_product_attention(q, k, v))
    assert torch.equal(attend(*low), F.scaled_dot_product_attention(*low))  # gradient on: SDPA


def test_text_query_attention_equals_plain_attention_without_projecting_the_context():
    torch.manual_seed(1)
    attn = TextQueryAttention(64, 8).to(DEVICE)
    with torch.no_grad():
        attn.k_proj.bias.normal_()
    query, context = torch.randn(3, 1, 64, device=DEVICE), torch.randn(3, 500, 64, device=DEVICE)
    assert close(attn(query, context), plain_attention(attn, query, context))


def test_channel_norm_equals_segment_anythings_layernorm2d():
    torch.manual_seed(2)
    ours, sam = ChannelNorm(32).to(DEVICE), LayerNorm2d(32).to(DEVICE)
    with torch.no_grad():
        ours.weight.normal_(), ours.bias.normal_()
    sam.load_state_dict(ours.state_dict())
    x = torch.randn(2, 32, 7, 9, device=DEVICE)
    assert close(ours(x), sam(x)) and close(ours(x.contiguous(memory_format=torch.channels_last)), sam(x))


def test_pointwise_conv_equals_conv2d_in_both_layouts():
    torch.manual_seed(7)
    conv = PointwiseConv(24, 8).to(DEVICE)
    x = torch.randn(2, 24, 5, 7, device=DEVICE)
    expected = F.conv2d(x, conv.weight, conv.bias)
    assert close(conv(x), expected) and close(conv(x.contiguous(memory_format=torch.channels_last)), expected)


def test_fusion_projects_before_resizing_as_if_after():
    """Projection on CLIP's grid then resize equals resize then 1x1 convolution."""
    torch.manual_seed(3)
    fusion = ClipToSideFusion(48, 32, 4).to(DEVICE).eval()
    side, clip = torch.randn(2, 6, 10, 32, device=DEVICE), torch.randn(2, 16, 48, device=DEVICE)
    clip_map = clip.transpose(1, 2).reshape(2, 48, 4, 4)
    resized = F.interpolate(clip_map, size=(6, 10), mode="bilinear", align_corners=False)
    conv = F.conv2d(resized, fusion.clip_proj.weight[:, :, None, None], fusion.clip_proj.bias)
    query = fusion.clip_norm(conv.permute(0, 2, 3, 1)).reshape(2, 60, 32)
    expected = side + fusion.out_norm(plain_attention(fusion.attn, query, side.reshape(2, 60, 32))).view(2, 6, 10, 32)
    assert close(fusion(side, clip, (4, 4)), expected)


def test_decoder_equals_concatenate_then_fuse_and_plain_text_attention():
    torch.manual_seed(4)
    decoder = MaskDecoder(64, 16, 24, 2, dropout=0.1).to(DEVICE).eval()
    features, text = torch.randn(2, 64, 6, 4, device=DEVICE), torch.randn(1, 24, device=DEVICE)
    pyramid = [
        F.interpolate(lateral(scale(features)), size=(24, 16), mode="bilinear", align_corners=False)
        for scale, lateral in zip(decoder.scales, decoder.laterals)
    ]
    fused = F.conv2d(torch.cat(pyramid, dim=1), decoder.fuse.weight, decoder.fuse.bias)
    tokens = fused.flatten(2).transpose(1, 2)
    query = decoder.query_proj(text).expand(2, -1).unsqueeze(1)
    fused = fused + plain_attention(decoder.query_attn, query, tokens).view(2, 16, 1, 1)
    expected = F.conv2d(decoder.norm(fused), decoder.predict.weight, decoder.predict.bias)
    out = decoder(features, text)
    assert out.shape == (2, 1, 24, 16) and out.dtype == torch.float32
    assert close(out, expected, 1e-4)


def test_detection_head_scores_class_tokens_against_both_prompts():
    """``nn.MultiheadAttention``'s packed parameters (as the published head has them), self-
    attention written out, residual, LayerNorm, mean over taps, bias-free projection, dot
    products with the two text features."""
    torch.manual_seed(5)
    head = DetectionHead(32, 16, 4, dropout=0.1).to(DEVICE).eval()
    assert isinstance(head.attn, torch.nn.MultiheadAttention) and head.attn.in_proj_weight.shape == (96, 32)
    assert head.proj.bias is None and head.norm.eps == 1e-5
    cls, text = torch.randn(3, 7, 32, device=DEVICE), F.normalize(torch.randn(2, 16, device=DEVICE), dim=-1)
    q, k, v = (
        t.view(3, 7, 4, 8).transpose(1, 2)
        for t in F.linear(cls, head.attn.in_proj_weight, head.attn.in_proj_bias).chunk(3, -1)
    )
    attended = ((q @ k.transpose(-1, -2)) / 8**0.5).softmax(-1) @ v
    attended = head.attn.out_proj(attended.transpose(1, 2).reshape(3, 7, 32))
    expected = head.proj(head.norm(cls + attended).mean(1)) @ text.t()
    assert close(head(cls, text), expected)


@pytest.mark.parametrize("part", ["decoder", "head"])
def test_dropout_is_active_only_in_training(part):
    torch.manual_seed(6)
    if part == "decoder":
        module = MaskDecoder(32, 8, 8, 2, dropout=0.5).to(DEVICE)
        args = (torch.randn(1, 32, 4, 4, device=DEVICE), torch.randn(1, 8, device=DEVICE))
    else:
        module = DetectionHead(16, 8, 2, dropout=0.5).to(DEVICE)
        args = (torch.randn(2, 7, 16, device=DEVICE), torch.randn(2, 8, device=DEVICE))
    module.eval()
    assert torch.equal(module(*args), module(*args))
    module.train()
    assert not torch.equal(module(*args), module(*args))
