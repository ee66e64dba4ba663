"""MaskCLIP (OpenSDI, CVPR 2025): the network, composed from its parts, with Benco's contract.

Benco's samples arrive normalized with ImageNet statistics; one per-channel affine map moves
them to CLIP's statistics at the entrance, and both the frozen CLIP and the side ViT see that
tensor, as in the published network. After chosen side blocks a fusion layer lets CLIP patch
tokens attend over the side tokens. The mask decoder turns the side map into mask logits,
queried by the "fake" prompt feature, and they are resized to the input (bilinear,
align_corners=True); the detection head scores the CLIP class tokens against the "real" and
"fake" prompts.

``MaskCLIP(setting)`` is the network with random weights; ``build.build_maskclip`` (the name
``MaskCLIP`` in Benco's ``MODELS``) adds pretrained CLIP and MAE/SAM weights.
"""

from typing import TYPE_CHECKING

import open_clip
import torch
import torch.nn.functional as F
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn
from torch.utils.checkpoint import checkpoint

from imdlbenco_maskclip.model.clip_encoder import ClipTaps, FrozenCLIP
from imdlbenco_maskclip.model.detection_head import DetectionHead
from imdlbenco_maskclip.model.fusion import ClipToSideFusion
from imdlbenco_maskclip.model.mask_decoder import MaskDecoder
from imdlbenco_maskclip.model.prompt_learner import PromptLearner
from imdlbenco_maskclip.model.settings import MaskCLIPSettings, get_setting
from imdlbenco_maskclip.model.side_vit import build_side_vit

if TYPE_CHECKING:
    from imdlbenco_maskclip.model.weights import LoadReport

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
NO_SOURCE = "none"


class MaskCLIP(nn.Module):
    """MaskCLIP for Benco: ``pred_mask`` (B x 1 x H x W) and ``pred_label`` (B) fake probabilities.

    Args:
        setting: a name in ``SETTINGS`` (``paper``, ``paper_sam``, ``base``, ``tiny``) or a
            ``MaskCLIPSettings``.
        edge_lambda: weight of the edge-restricted BCE term.
        grad_checkpointing: in training, keep only each side block's input and recompute the
            block (and the fusion after it) in backward: less activation memory for about
            a third more side-network compute. The function computed is the same.
        clip: the open_clip ``CLIP`` of the setting, already holding its weights (see
            ``build_maskclip``); None builds one with random weights.

    Other weights are random; ``clip_source`` says where the frozen CLIP's weights came from
    (``none`` for random ones; loaders set it), ``weights_report`` what loading the side
    network's MAE or SAM weights did (None when it started random). Frozen CLIP weights are left out of
    ``state_dict`` when they came from a source (they are rebuilt from it) and kept when
    random. Image sides must be multiples of 16.
    """

    def __init__(
        self,
        setting: "str | MaskCLIPSettings" = "paper",
        edge_lambda: float = 20.0,
        grad_checkpointing: bool = False,
        clip: "nn.Module | None" = None,
    ) -> None:
        super().__init__()
        self.settings = settings = get_setting(setting)
        if len(settings.fuse_after) != len(settings.clip.tap_blocks):
            raise ValueError(
                f"setting: {len(settings.fuse_after)} fusion points, {len(settings.clip.tap_blocks)} CLIP taps"
            )
        self.clip_source = NO_SOURCE
        self.weights_report: LoadReport | None = None
        if clip is None:  # open_clip.create_model would warn that the weights are random
            clip = open_clip.CLIP(
                **open_clip.get_model_config(settings.clip.model), quick_gelu=settings.clip.quick_gelu
            )
        self.clip = FrozenCLIP(clip, settings.clip.tap_blocks)
        self.prompts = PromptLearner(
            settings.n_ctx, self.clip.text_width, settings.prompt_template, settings.clip.tokenizer
        )
        self.side_vit = build_side_vit(settings.side)
        self.fusions = nn.ModuleList(
            ClipToSideFusion(self.clip.width, settings.side.width, settings.fusion_heads) for _ in settings.fuse_after
        )
        self.mask_decoder = MaskDecoder(
            settings.side.width, settings.decoder_dim, self.clip.embed_dim, settings.decoder_heads, settings.dropout
        )
        self.detection_head = DetectionHead(self.clip.width, self.clip.embed_dim, settings.head_heads, settings.dropout)
        self.edge_lambda = float(edge_lambda)
        self.grad_checkpointing = bool(grad_checkpointing)
        self.register_buffer("input_scale", None, persistent=False)
        self.register_buffer("input_shift", None, persistent=False)
        self._fusion_after = {block: tap for tap, block in enumerate(settings.fuse_after)}
        self._text_cache: tuple[tuple, torch.Tensor] | None = None
        self._set_input_affine()
        self._register_state_dict_hook(_drop_rebuildable_clip)
        self._register_load_state_dict_pre_hook(_restore_rebuildable_clip, with_module=True)

    def _set_input_affine(self) -> None:
        device = self.prompts.contexts.device
        std = torch.tensor(OPENAI_DATASET_STD, device=device)
        self.input_scale = (torch.tensor(IMAGENET_STD, device=device) / std).view(1, 3, 1, 1)
        mean_shift = torch.tensor(IMAGENET_MEAN, device=device) - torch.tensor(OPENAI_DATASET_MEAN, device=device)
        self.input_shift = (mean_shift / std).view(1, 3, 1, 1)

    def rebuild_buffers(self) -> None:
        """Compute the tensors the state dict does not hold (the input affine map, the prompt
        tokens, CLIP's causal mask) on the device of the weights. Weights assigned into a
        network built on the meta device (``checkpoints.loading``) need this once; the values
        are those ``__init__`` computes."""
        self._set_input_affine()
        self.prompts.rebuild_buffers()
        self.clip.rebuild_buffers()
        self._text_cache = None

    # ------------------------------------------------------------ frozen parts

    def train(self, mode: bool = True) -> "MaskCLIP":
        """Set train/eval mode (CLIP stays in eval); a change of mode drops the cached text features."""
        if mode != self.training:
            self._text_cache = None
        return super().train(mode)

    def text_features(self) -> torch.Tensor:
        """The L2-normalized real and fake prompt features, 2 x D in fp32.

        In eval mode without gradient they are computed once and reused until the contexts
        change (their version counter moves on every in-place update), the model is put in
        train mode or a state dict is loaded.
        """
        contexts = self.prompts.contexts
        device_type = contexts.device.type
        key = (
            contexts._version,
            contexts.device,
            contexts.dtype,
            torch.is_autocast_enabled(device_type),
            torch.get_autocast_dtype(device_type),
            torch.is_inference_mode_enabled(),
        )
        cacheable = not self.training and not torch.is_grad_enabled()
        if cacheable and self._text_cache is not None and self._text_cache[0] == key:
            return self._text_cache[1]
        prompts = self.prompts(self.clip.embed_tokens(self.prompts.tokens))
        features = F.normalize(self.clip.encode_prompts(prompts, self.prompts.eot_index).float(), dim=-1)
        if cacheable:
            self._text_cache = (key, features)
        return features

    # ------------------------------------------------------------ forward

    def clip_normalize(self, image: torch.Tensor) -> torch.Tensor:
        """An ImageNet-normalized image (Benco's samples) normalized with CLIP's statistics
        instead: one per-channel affine map."""
        return torch.addcmul(self.input_shift.to(image.dtype), image, self.input_scale.to(image.dtype))

    def forward(
        self,
        image: torch.Tensor,
        mask: torch.Tensor | None = None,
        label: torch.Tensor | None = None,
        edge_mask: torch.Tensor | None = None,
        **kwargs,
    ) -> dict:
        """Benco's contract: ``image`` B x 3 x H x W (ImageNet-normalized, sides multiples of
        16) -> ``pred_mask`` B x 1 x H x W and ``pred_label`` B (fake probabilities); with
        ``mask`` also ``backward_loss``, ``visual_loss`` (detached scalars for logging) and
        ``visual_image``. Other Benco keys (``shape``, ``name``, ``if_predcit_label``, ...)
        are accepted and ignored."""
        patch = self.side_vit.patch_size
        if image.shape[-2] % patch or image.shape[-1] % patch:
            raise ValueError(f"MaskCLIP needs image sides that are multiples of {patch}, got {tuple(image.shape[-2:])}")
        text = self.text_features()
        image = self.clip_normalize(image)
        taps = self.clip(image)
        x = self.side_vit.embed(image)
        for index in range(len(self.side_vit.blocks)):
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(self._side_step, index, x, taps, use_reentrant=False)
            else:
                x = self._side_step(index, x, taps)
        mask_logits = self.mask_decoder(x.permute(0, 3, 1, 2), text[1:])
        mask_logits = F.interpolate(mask_logits, size=image.shape[-2:], mode="bilinear", align_corners=True)
        label_logits = self.detection_head(taps.cls, text)
        pred_mask = torch.sigmoid(mask_logits)
        output = {"pred_mask": pred_mask, "pred_label": label_logits.softmax(dim=-1)[:, 1]}
        if mask is not None:
            losses = self.losses(mask_logits, label_logits, mask, label, edge_mask)
            output["backward_loss"] = losses["total"]
            output["visual_loss"] = {name: value.detach() for name, value in losses.items()}
            output["visual_image"] = {
                "pred_mask": pred_mask.detach(),
                "error_map": (pred_mask.detach() - mask.to(pred_mask.dtype)).abs(),
            }
        return output

    def losses(
        self,
        mask_logits: torch.Tensor,
        label_logits: torch.Tensor,
        mask: torch.Tensor,
        label: torch.Tensor | None,
        edge_mask: torch.Tensor | None,
    ) -> dict:
        """CE on the two logits + BCE on the mask + ``edge_lambda`` x edge-weighted BCE, all
        from logits in fp32 (finite under fp16/bf16 autocast). A missing label is derived
        from the mask (fake when any pixel is marked)."""
        with torch.autocast(mask_logits.device.type, enabled=False):
            target = mask.float()
            if label is None:
                label = target.flatten(1).amax(dim=1)
            label = torch.as_tensor(label, device=label_logits.device).reshape(-1)
            label = (label > 0.5).long() if label.is_floating_point() else label.long()
            logits = mask_logits.float()
            ce = F.cross_entropy(label_logits.float(), label)
            bce = F.binary_cross_entropy_with_logits(logits, target)
            if edge_mask is not None:
                edge = F.binary_cross_entropy_with_logits(logits, target, weight=edge_mask.float())
            else:
                edge = logits.new_zeros(())
            return {"ce": ce, "bce": bce, "edge": edge, "total": ce + bce + self.edge_lambda * edge}

    def _side_step(self, index: int, x: torch.Tensor, taps: ClipTaps) -> torch.Tensor:
        """Side block ``index`` and the fusion that follows it, if any."""
        x = self.side_vit.blocks[index](x)
        tap = self._fusion_after.get(index)
        return x if tap is None else self.fusions[tap](x, taps.tokens[tap], taps.grid)

    # ------------------------------------------------------------ reporting

    def parameter_counts(self) -> dict:
        """Parameters per part (``clip`` frozen, the rest trainable), split as the published
        model's parts are counted."""

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        text_projection = count(self.mask_decoder.query_proj)
        parts = {
            "clip": count(self.clip),
            "side_vit": count(self.side_vit),
            "fusion": count(self.fusions),
            "decoder": count(self.mask_decoder) - text_projection,
            "text_projection": text_projection,
            "detection_head": count(self.detection_head),
            "prompts": count(self.prompts),
        }
        parts["trainable"] = sum(p.numel() for p in self.parameters() if p.requires_grad)
        parts["total"] = count(self)
        return parts


def _drop_rebuildable_clip(module: MaskCLIP, state_dict: dict, prefix: str, local_metadata: dict) -> None:
    """State-dict hook: leave out the frozen CLIP when its weights come from a pretrained source."""
    if module.clip_source == NO_SOURCE:
        return
    for key in [k for k in state_dict if k.startswith(prefix + "clip.")]:
        del state_dict[key]


def _restore_rebuildable_clip(
    module: MaskCLIP,
    state_dict: dict,
    prefix: str,
    local_metadata: dict,
    strict: bool,
    missing_keys: list,
    unexpected_keys: list,
    error_msgs: list,
) -> None:
    """Load pre-hook: a state dict without any CLIP key gets the model's own (pretrained)
    CLIP tensors, so strict loading passes and nothing is copied (a tensor copied onto itself
    is skipped). Also drops the cached text features."""
    module._text_cache = None
    clip_prefix = prefix + "clip."
    if module.clip_source == NO_SOURCE or any(key.startswith(clip_prefix) for key in state_dict):
        return
    state_dict.update(module.clip.state_dict(prefix=clip_prefix, keep_vars=True))
