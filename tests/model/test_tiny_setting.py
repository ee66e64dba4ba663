"""The tiny MaskCLIP: Benco's forward contract, gradients, the frozen CLIP, text features, autocast.

Runs on CPU by default; ``MASKCLIP_TEST_DEVICE=cuda`` runs the same checks on a GPU.
"""

from __future__ import annotations

import argparse
import os

import pytest
import torch
import torch.nn.functional as F

import imdlbenco_maskclip  # noqa: F401  (registers MaskCLIP in Benco's MODELS)
from imdlbenco_maskclip.model import MaskCLIP, build_maskclip

DEVICE = torch.device(os.environ.get("MASKCLIP_TEST_DEVICE", "cpu"))
if DEVICE.type == "cuda":  # compare in true fp32, not TF32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def make_batch(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> dict:
    """A Benco-like batch: ImageNet-normalized images, binary masks (the first image real),
    labels as Benco's default collate gives them, an edge band and the extra keys."""
    generator = torch.Generator().manual_seed(seed)
    mask = torch.zeros(batch, 1, height, width)
    mask[1:, :, height // 4 : height // 2, width // 4 : 3 * width // 4] = 1
    edge = F.max_pool2d(mask, 3, 1, 1) - (-F.max_pool2d(-mask, 3, 1, 1))
    data = {
        "image": torch.randn(batch, 3, height, width, generator=generator),
        "mask": mask,
        "label": (mask.flatten(1).amax(1) > 0).long(),
        "edge_mask": edge,
        "shape": torch.tensor([[height, width]] * batch),
        "origin_shape": torch.tensor([[height, width]] * batch),
        "shape_mask": torch.ones(batch, 1, height, width),
        "name": [f"sample{i}.jpg" for i in range(batch)],
    }
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in data.items()}


@pytest.fixture
def tiny() -> MaskCLIP:
    torch.manual_seed(0)
    return MaskCLIP("tiny").to(DEVICE)


def test_forward_with_targets_follows_benco_contract(tiny):
    data = make_batch(2, 64, 64)
    out = tiny(**data, if_predcit_label=True)
    assert out["pred_mask"].shape == (2, 1, 64, 64)
    assert out["pred_label"].shape == (2,)
    assert out["pred_mask"].min() >= 0 and out["pred_mask"].max() <= 1
    losses = out["visual_loss"]
    assert set(losses) == {"ce", "bce", "edge", "total"}
    assert all(v.ndim == 0 and torch.isfinite(v) for v in losses.values())
    assert torch.allclose(losses["total"], losses["ce"] + losses["bce"] + 20.0 * losses["edge"])
    assert out["backward_loss"].requires_grad and not any(v.requires_grad for v in losses.values())
    assert torch.equal(out["backward_loss"], losses["total"])
    for image in out["visual_image"].values():
        assert image.shape == (2, 1, 64, 64) and not image.requires_grad
    out["backward_loss"].backward()


def test_inference_without_targets(tiny):
    tiny.eval()
    with torch.no_grad():
        out = tiny(image=make_batch(3, 96, 96)["image"])
    assert set(out) == {"pred_mask", "pred_label"}
    assert out["pred_mask"].shape == (3, 1, 96, 96)


@pytest.mark.parametrize("size", [(64, 96), (112, 48), (48, 48)])
def test_non_square_and_odd_grids(tiny, size):
    data = make_batch(2, *size)
    out = tiny(**data)
    assert out["pred_mask"].shape == (2, 1, *size)
    out["backward_loss"].backward()
    assert torch.isfinite(out["backward_loss"])


def test_rejects_sides_that_are_not_multiples_of_16(tiny):
    with pytest.raises(ValueError, match="multiples of 16"):
        tiny(image=torch.randn(1, 3, 64, 72, device=DEVICE))


def test_pred_label_is_the_fake_probability_of_the_prompt_logits(tiny):
    tiny.eval()
    data = make_batch(4, 64, 64)
    with torch.no_grad():
        out = tiny(**data)
        logits = tiny.detection_head(tiny.clip(tiny.clip_normalize(data["image"])).cls, tiny.text_features())
    assert torch.allclose(out["pred_label"], logits.softmax(-1)[:, 1], atol=1e-6)
    assert ((out["pred_label"] >= 0) & (out["pred_label"] <= 1)).all()


def test_labels_as_long_float_or_missing_give_the_same_loss(tiny):
    tiny.eval()
    data = make_batch(2, 64, 64)
    with torch.no_grad():
        reference = tiny(**data)["visual_loss"]["ce"]
        as_float = tiny(**{**data, "label": data["label"].float()})["visual_loss"]["ce"]
        missing = tiny(**{**data, "label": None})["visual_loss"]["ce"]
    assert torch.allclose(reference, as_float) and torch.allclose(reference, missing)


def test_gradients_reach_every_trainable_part_and_nothing_in_clip(tiny):
    out = tiny(**make_batch(2, 64, 64))
    out["backward_loss"].backward()
    # Every trainable parameter takes part (DistributedDataParallel requires it), even the
    # attention key biases, whose gradient is zero up to rounding (they shift all scores equally).
    for name, param in tiny.named_parameters():
        if name.startswith("clip."):
            assert not param.requires_grad and param.grad is None, name
        else:
            assert param.grad is not None and torch.isfinite(param.grad).all(), name
    assert tiny.mask_decoder.query_attn.k_proj.bias.grad.abs().max() < 1e-4
    for part in ("prompts", "side_vit", "fusions", "mask_decoder", "detection_head"):
        assert sum(p.grad.abs().sum() for p in getattr(tiny, part).parameters() if p.grad is not None) > 0, part


def test_grad_checkpointing_computes_the_same_loss_and_gradients(tiny):
    data = make_batch(2, 64, 64)
    results = []
    for enabled in (False, True):
        tiny.zero_grad(set_to_none=True)
        tiny.grad_checkpointing = enabled
        tiny.train()
        torch.manual_seed(11)
        loss = tiny(**data)["backward_loss"]
        loss.backward()
        results.append((loss.detach(), {n: p.grad.clone() for n, p in tiny.named_parameters() if p.grad is not None}))
    tiny.grad_checkpointing = False
    tiny.zero_grad(set_to_none=True)
    (plain_loss, plain), (checked_loss, checked) = results
    assert torch.allclose(plain_loss, checked_loss, atol=1e-6) and plain.keys() == checked.keys()
    assert all(torch.allclose(plain[n], checked[n], atol=1e-5) for n in plain)


def test_clip_stays_in_eval_mode_and_out_of_optimizers(tiny):
    from timm.optim import create_optimizer_v2

    tiny.train()
    assert tiny.training and tiny.side_vit.training and tiny.mask_decoder.dropout.training
    assert not any(m.training for m in tiny.clip.modules())
    clip_ids = {id(p) for p in tiny.clip.parameters()}
    timm_optimizer = create_optimizer_v2(tiny, "adamw", lr=1e-3, weight_decay=0.05)
    plain = torch.optim.AdamW([p for p in tiny.parameters() if p.requires_grad], lr=1e-3)
    for optimizer in (timm_optimizer, plain):
        in_optimizer = {id(p) for group in optimizer.param_groups for p in group["params"]}
        assert not in_optimizer & clip_ids
        assert len(in_optimizer) == sum(1 for p in tiny.parameters() if p.requires_grad)
    before = {k: v.clone() for k, v in tiny.clip.state_dict().items()}
    tiny(**make_batch(2, 64, 64))["backward_loss"].backward()
    timm_optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in tiny.clip.state_dict().items())


def test_clip_taps_are_the_ln_2_outputs_of_open_clips_own_forward_on_clip_statistics(tiny):
    """Benco's ImageNet-normalized input is moved to CLIP's statistics inside the model; the
    taps stop early but equal open_clip's full forward read by hooks on ``ln_2``."""
    from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD

    pixels = torch.rand(2, 3, 96, 64, device=DEVICE)
    imagenet = (pixels - torch.tensor([0.485, 0.456, 0.406], device=DEVICE)[:, None, None]) / torch.tensor(
        [0.229, 0.224, 0.225], device=DEVICE
    )[:, None, None]
    resized = F.interpolate(pixels, size=(64, 64), mode="bilinear", align_corners=True)
    clip_input = (resized - torch.tensor(OPENAI_DATASET_MEAN, device=DEVICE)[:, None, None]) / torch.tensor(
        OPENAI_DATASET_STD, device=DEVICE
    )[:, None, None]
    visual = tiny.clip.model.visual
    seen = []
    hooks = [
        visual.transformer.resblocks[i].ln_2.register_forward_hook(lambda m, a, out: seen.append(out))
        for i in tiny.settings.clip.tap_blocks
    ]
    with torch.no_grad():
        visual(clip_input)
        expected = list(seen)
        taps = tiny.clip(tiny.clip_normalize(imagenet))
    for hook in hooks:
        hook.remove()
    assert taps.grid == (4, 4) and taps.cls.shape == (2, 4, 64)
    for i, reference in enumerate(expected):
        assert torch.allclose(taps.tokens[i], reference[:, 1:], atol=1e-5)
        assert torch.allclose(taps.cls[:, i], reference[:, 0], atol=1e-5)


def test_text_features_on_the_end_token_prefix_equal_open_clips_full_77_positions(tiny):
    """With the contexts set to the template's own token embeddings, the truncated prompt
    computation must equal open_clip's ``encode_text`` over all 77 positions."""
    import open_clip

    tokens = open_clip.get_tokenizer(tiny.settings.clip.tokenizer)([tiny.settings.prompt_template]).to(DEVICE)
    assert tiny.prompts.tokens.shape[1] < 20 < tokens.shape[1] == 77
    with torch.no_grad():
        words = tiny.clip.embed_tokens(tokens)[0, 1 : 1 + tiny.settings.n_ctx]
        tiny.prompts.contexts.copy_(words.expand(2, -1, -1))
        full = F.normalize(tiny.clip.model.encode_text(tokens), dim=-1)
        ours = tiny.text_features()
    assert torch.allclose(ours[0], full[0], atol=1e-5) and torch.allclose(ours[1], full[0], atol=1e-5)


def test_text_features_are_cached_in_eval_and_refreshed_when_stale(tiny):
    tiny.eval()
    with torch.no_grad():
        first = tiny.text_features()
        assert tiny.text_features() is first
        tiny.prompts.contexts.add_(0.5)
        changed = tiny.text_features()
    assert changed is not first and not torch.allclose(changed, first)
    tiny.train()
    assert tiny._text_cache is None
    training = tiny.text_features()
    assert training.requires_grad and tiny._text_cache is None
    tiny.eval()
    with torch.no_grad():
        cached = tiny.text_features()
        tiny.load_state_dict(tiny.state_dict())
        assert tiny.text_features() is not cached
        assert torch.allclose(tiny.text_features(), cached)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_losses_stay_finite_under_autocast_with_extreme_logits(tiny, dtype):
    with torch.no_grad():
        tiny.mask_decoder.predict.weight.mul_(1e4)
        tiny.mask_decoder.predict.bias.fill_(-3e4)
        tiny.detection_head.proj.weight.mul_(1e5)
    data = make_batch(2, 64, 64)
    with torch.autocast(DEVICE.type, dtype=dtype):
        out = tiny(**data)
    losses = out["visual_loss"]
    assert all(torch.isfinite(v) for v in losses.values()), losses
    assert losses["bce"] > 100 and losses["ce"] > 100  # the extremes really were reached
    assert out["pred_mask"].dtype == torch.float32 and torch.isfinite(out["pred_label"]).all()
    out["backward_loss"].backward()
    if dtype == torch.bfloat16:  # fp16 gradients this large may overflow: that is GradScaler's job
        assert all(torch.isfinite(p.grad).all() for p in tiny.parameters() if p.grad is not None)


def test_benco_argparsers_turn_the_options_into_typed_flags():
    from IMDLBenCo.training_scripts.utils.misc import create_argparser

    from imdlbenco_maskclip.host.workarounds import model_argparser

    flags = ["--setting", "tiny", "--clip_pretrained", "none", "--side_init", "none", "--edge_lambda", "5"]
    for parser in (create_argparser(build_maskclip), model_argparser(build_maskclip)):
        args = parser.parse_args(flags)
        assert args.setting == "tiny" and args.edge_lambda == 5.0
        model = build_maskclip(**vars(args))
        assert model.clip_source == "none" and model.edge_lambda == 5.0
    none_flags = model_argparser(build_maskclip).parse_args(
        ["--setting", "tiny", "--clip_pretrained", "none", "--side_init", "none"]
    )
    assert none_flags.clip_pretrained is None  # the lead's parser reads none as None
    assert build_maskclip(**vars(none_flags)).clip_source == "none"
    defaults = vars(create_argparser(build_maskclip).parse_args([]))
    assert defaults == {
        "setting": "paper",
        "clip_pretrained": "default",
        "side_init": "default",
        "side_weights": "default",
        "edge_lambda": 20.0,
        "grad_checkpointing": False,
    }


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"setting": "huge"}, "setting: unknown MaskCLIP setting"),
        ({"setting": "tiny", "side_init": "imagenet"}, "side_init: 'imagenet' is not one of"),
        ({"setting": "tiny", "side_weights": "/x/mae.pth"}, "side_weights: given but side_init is none"),
        ({"setting": "tiny", "side_init": "mae"}, "side_init: .*use setting paper or base"),
        ({"setting": "tiny", "clip_pretrained": "openai"}, "clip_pretrained: .*neither a file nor an open_clip tag"),
        (
            {"setting": "tiny", "clip_pretrained": "/no/such/open_clip_pytorch_model.bin"},
            "clip_pretrained: .*neither a file",
        ),
    ],
)
def test_option_errors_are_value_errors_that_name_the_option(kwargs, message):
    """Python terms for Python callers (ValueError), with the option for the CLI's message."""
    with pytest.raises(ValueError, match=message) as caught:
        build_maskclip(**kwargs)
    assert caught.value.option == message.split(":")[0]


def test_registered_in_benco_models_as_the_factory():
    from IMDLBenCo.registry import MODELS

    assert MODELS.get("MaskCLIP") is build_maskclip


def test_state_dict_keeps_random_clip_and_loads_strictly(tiny):
    state = tiny.state_dict()
    assert any(k.startswith("clip.") for k in state)
    torch.manual_seed(1)
    other = MaskCLIP("tiny").to(DEVICE)
    other.load_state_dict(state)
    assert all(torch.equal(v, other.state_dict()[k]) for k, v in state.items())


def test_state_dict_leaves_out_pretrained_clip_and_benco_checkpoints_round_trip(tmp_path):
    """A CLIP from a weights file is rebuilt from it, so checkpoints leave it out; strict
    loading (ours and Benco's ``misc.load_model``) still works."""
    from IMDLBenCo.training_scripts.utils import misc

    from imdlbenco_maskclip.host import workarounds

    workarounds.install()
    torch.manual_seed(3)
    source = MaskCLIP("tiny")
    clip_file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(source.clip.model.state_dict(), clip_file)

    model = build_maskclip("tiny", clip_pretrained=str(clip_file)).to(DEVICE)
    assert model.clip_source == str(clip_file)
    assert all(
        torch.equal(v, source.clip.model.state_dict()[k].to(DEVICE)) for k, v in model.clip.model.state_dict().items()
    )
    state = model.state_dict()
    assert state and not any(k.startswith("clip.") for k in state)
    assert set(state) == {k for k in source.state_dict() if not k.startswith("clip.")}

    torch.manual_seed(4)
    fresh = build_maskclip("tiny", clip_pretrained=str(clip_file)).to(DEVICE)
    assert fresh.load_state_dict(state, strict=True).missing_keys == []
    assert all(torch.equal(v, fresh.state_dict()[k]) for k, v in state.items())
    with pytest.raises(RuntimeError, match="Missing key"):
        fresh.load_state_dict({k: v for k, v in state.items() if not k.startswith("side_vit.")})

    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    model(**make_batch(2, 64, 64))["backward_loss"].backward()
    optimizer.step()
    scaler = misc.NativeScalerWithGradNormCount()
    args = argparse.Namespace(output_dir=str(tmp_path), resume="", eval=False)
    misc.save_model(args, 7, model, model, optimizer, scaler)
    checkpoint = tmp_path / "checkpoint-7.pth"
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)["model"]
    assert set(saved) == set(state)

    torch.manual_seed(5)
    restored = build_maskclip("tiny", clip_pretrained=str(clip_file)).to(DEVICE)
    restored_optimizer = torch.optim.AdamW([p for p in restored.parameters() if p.requires_grad], lr=1e-3)
    misc.load_model(
        argparse.Namespace(resume=str(checkpoint), eval=False),
        restored,
        restored_optimizer,
        misc.NativeScalerWithGradNormCount(),
    )
    assert all(torch.equal(v, restored.state_dict()[k]) for k, v in model.state_dict().items())
    assert restored_optimizer.state_dict()["state"].keys() == optimizer.state_dict()["state"].keys()


def test_load_model_rebuilds_a_left_out_clip_from_its_recorded_source(tmp_path):
    """This package's checkpoints leave out a CLIP that came from a source; ``load_model``
    rebuilds it from the recorded file, or from one passed as ``clip_pretrained``."""
    from imdlbenco_maskclip import load_model
    from imdlbenco_maskclip.checkpoints import layout

    torch.manual_seed(3)
    source = MaskCLIP("tiny")
    clip_file = tmp_path / "open_clip_pytorch_model.bin"
    torch.save(source.clip.model.state_dict(), clip_file)
    model = build_maskclip("tiny", clip_pretrained=str(clip_file))
    path = tmp_path / "checkpoint.pth"
    options = {"setting": "tiny", "clip_pretrained": str(clip_file)}
    layout.save_atomic({"model": model.state_dict(), "model_name": "MaskCLIP", "model_args": options, "epoch": 0}, path)
    assert not any(k.startswith("clip.") for k in torch.load(path, weights_only=True)["model"])

    loaded = load_model(path)
    assert loaded.clip_source == str(clip_file) and not loaded.training
    assert all(torch.equal(v, loaded.state_dict()[k]) for k, v in model.state_dict().items())
    assert all(torch.equal(v, source.clip.model.state_dict()[k]) for k, v in loaded.clip.model.state_dict().items())

    moved = clip_file.rename(tmp_path / "elsewhere.bin")
    with pytest.raises(ValueError, match="clip_pretrained: .*neither a file"):
        load_model(path)
    assert load_model(path, clip_pretrained=str(moved)).clip_source == str(moved)
