"""The trainable side ViT: segment-anything's ViTDet blocks with drop path and SDPA attention.

Parameter names are segment-anything's ``ImageEncoderViT`` names (``patch_embed``,
``pos_embed``, ``blocks.N.{norm1,attn.qkv,attn.proj,attn.rel_pos_h,attn.rel_pos_w,norm2,
mlp.lin1,mlp.lin2}``), so SAM and (remapped) MAE checkpoints load directly. LayerNorms use
eps 1e-6 and the absolute position table keeps MAE's layout (a class slot, then a 14 x 14
grid), resized bicubically to the token grid in every forward, as the published network has
them. Three changes keep the math and cut the cost: attention runs through
``scaled_dot_product_attention`` (``attention.attend``; segment-anything's ``Attention``
computes the softmax explicitly) with the decomposed relative-position term folded into the
query-key product (see ``SideAttention``); window blocks project q/k/v before padding to
whole windows and skip the padded queries; and the MLP recomputes its GELU in backward
instead of storing it.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
import torch.nn.functional as F
from segment_anything.modeling.image_encoder import Attention, Block, PatchEmbed, get_rel_pos
from timm.layers import resample_abs_pos_embed, trunc_normal_
from torch import nn

from imdlbenco_maskclip.model.attention import attend
from imdlbenco_maskclip.model.settings import SideSettings


class _RelativeQuery(torch.autograd.Function):
    """q (... x qh x qw x d) -> [q, rel_h, rel_w, zeros] with rel_h = q . table_h[query row]
    and rel_w = q . table_w[query column]. It saves only its output, which SDPA keeps anyway,
    and reads q back from it in backward, instead of keeping the two reordered copies of q
    that autograd would save for the two products."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, table_h: torch.Tensor, table_w: torch.Tensor, pad: int) -> torch.Tensor:
        rel_h = torch.einsum("...hwc,hkc->...hwk", q, table_h)
        rel_w = torch.einsum("...hwc,wkc->...hwk", q, table_w)
        parts = [q, rel_h, rel_w] + ([q.new_zeros(*q.shape[:-1], pad)] if pad else [])
        out = torch.cat(parts, dim=-1)
        ctx.save_for_backward(out, table_h, table_w)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, None]:
        out, table_h, table_w = ctx.saved_tensors
        dim, rows, columns = table_h.shape[2], table_h.shape[1], table_w.shape[1]
        q = out[..., :dim]
        grad_h, grad_w = grad[..., dim : dim + rows], grad[..., dim + rows : dim + rows + columns]
        grad_q = grad[..., :dim] + torch.einsum("...hwk,hkc->...hwc", grad_h, table_h)
        grad_q = grad_q + torch.einsum("...hwk,wkc->...hwc", grad_w, table_w)
        grad_table_h = torch.einsum("...hwk,...hwc->hkc", grad_h, q)
        grad_table_w = torch.einsum("...hwk,...hwc->wkc", grad_w, q)
        return grad_q, grad_table_h, grad_table_w, None


class SideAttention(Attention):
    """segment-anything's ``Attention`` (and, with ``window_size``, its window partition)
    computed by SDPA with exactly SAM's math, at less cost:

    * The decomposed relative-position term rel_h[q, key row] + rel_w[q, key column] is
      folded into the dot product instead of a materialized N x N mask: queries get their
      rel_h and rel_w values appended (scaled by sqrt(head_dim) to undo SDPA's scale) and
      keys the one-hot codes of their row and column, so q'.k' * scale = q.k * scale +
      rel_h + rel_w. SDPA keeps its fused kernels in forward and backward (an additive mask
      that needs a gradient forces the unfused path) and no N x N tensor is stored.
    * Windows are strided views of the q/k/v projection, padded to whole windows with the
      projection's bias (what SAM gets by projecting zero padding). Padded queries, whose
      outputs SAM crops away, are not computed: windows are attended in up to four groups
      (whole windows, the last window row, the last window column, the corner).
    """

    def _padded_qkv(self, x: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        height, width = x.shape[1:3]
        pad_h, pad_w = -height % window[0], -width % window[1]
        if not (pad_h or pad_w):
            return self.qkv(x)
        qkv = F.pad(F.linear(x, self.qkv.weight), (0, 0, 0, pad_w, 0, pad_h))
        return qkv.add_(self.qkv.bias.to(qkv.dtype)) if self.qkv.bias is not None else qkv

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, window: tuple[int, int]) -> torch.Tensor:
        """q ... x heads x qh x qw x d (the top-left part of each window), k and v
        ... x heads x wh x ww x d -> ... x heads x qh x qw x d."""
        *lead, qh, qw, dim = q.shape
        if self.use_rel_pos:
            scale = dim**0.5
            table_h = (get_rel_pos(window[0], window[0], self.rel_pos_h)[:qh] * scale).to(q.dtype)
            table_w = (get_rel_pos(window[1], window[1], self.rel_pos_w)[:qw] * scale).to(q.dtype)
            extra = window[0] + window[1]
            pad = -(dim + extra) % 8
            rows = torch.eye(window[0], dtype=q.dtype, device=q.device)[:, None, :].expand(-1, window[1], -1)
            columns = torch.eye(window[1], dtype=q.dtype, device=q.device)[None, :, :].expand(window[0], -1, -1)
            codes = F.pad(torch.cat([rows, columns], dim=-1), (0, pad)).expand(*lead, -1, -1, -1)
            q = _RelativeQuery.apply(q, table_h, table_w, pad)
            k, v = torch.cat([k, codes], dim=-1), F.pad(v, (0, extra + pad))
        q, k, v = (t.flatten(-3, -2).flatten(0, -4) for t in (q, k, v))
        out = attend(q, k, v, scale=dim**-0.5)
        return out[..., :dim].unflatten(-2, (qh, qw)).unflatten(0, tuple(lead[:-1]))

    def forward(self, x: torch.Tensor, window_size: int = 0) -> torch.Tensor:
        """``x`` B x H x W x C -> B x H x W x C; ``window_size`` 0 is global attention."""
        batch, height, width, dim = x.shape
        window = (window_size, window_size) if window_size else (height, width)
        qkv = self._padded_qkv(x, window)
        rows, columns = qkv.shape[1] // window[0], qkv.shape[2] // window[1]
        # B x rows x columns x 3 x heads x wh x ww x d, a view of the projection
        windows = qkv.view(batch, rows, window[0], columns, window[1], 3, self.num_heads, dim // self.num_heads)
        windows = windows.permute(0, 1, 3, 5, 6, 2, 4, 7)
        row_groups = [(0, height // window[0], window[0]), (height // window[0], rows, height % window[0])]
        column_groups = [(0, width // window[1], window[1]), (width // window[1], columns, width % window[1])]
        out_rows = []
        for r0, r1, qh in row_groups:
            if r1 <= r0 or not qh:
                continue
            out_columns = []
            for c0, c1, qw in column_groups:
                if c1 <= c0 or not qw:
                    continue
                group = windows[:, r0:r1, c0:c1]
                out = self._attend(group[:, :, :, 0, :, :qh, :qw], group[:, :, :, 1], group[:, :, :, 2], window)
                out_columns.append(out.permute(0, 1, 4, 2, 5, 3, 6).reshape(batch, (r1 - r0) * qh, (c1 - c0) * qw, dim))
            out_rows.append(torch.cat(out_columns, dim=2) if len(out_columns) > 1 else out_columns[0])
        out = torch.cat(out_rows, dim=1) if len(out_rows) > 1 else out_rows[0]
        return self.proj(out)


class _GeluThenLinear(torch.autograd.Function):
    """``F.linear(F.gelu(h), weight, bias)`` that keeps ``h`` but not ``gelu(h)`` for backward,
    where the activation is recomputed: one MLP-wide activation less per block in memory."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        weight = weight.to(h.dtype)
        ctx.save_for_backward(h, weight)
        return F.linear(F.gelu(h), weight, bias.to(h.dtype))

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        h, weight = ctx.saved_tensors
        grad = grad.to(h.dtype)
        flat = grad.reshape(-1, grad.shape[-1])
        grad_weight = flat.t() @ F.gelu(h).reshape(-1, h.shape[-1])
        grad_h = torch.ops.aten.gelu_backward(grad @ weight, h)
        return grad_h, grad_weight, flat.sum(0)


NORM_EPS = 1e-6


class SideBlock(Block):
    """segment-anything's ViTDet ``Block`` with ``SideAttention``, stochastic depth, LayerNorm
    eps ``NORM_EPS`` and an MLP (``lin1``, exact GELU, ``lin2``) that recomputes its GELU in
    backward.

    Stochastic depth is DropPath's (each residual branch is dropped per sample with
    probability ``drop_path``, kept ones scaled by 1 / (1 - ``drop_path``)), but a branch is
    computed only for the samples that keep it instead of being computed and multiplied by
    zero (about 5% less side-network work in training at the paper's rate).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float,
        window_size: int,
        input_size: tuple[int, int],
        drop_path: float,
    ) -> None:
        super().__init__(
            dim=dim,
            num_heads=num_heads,
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            norm_layer=partial(nn.LayerNorm, eps=NORM_EPS),
            use_rel_pos=True,
            window_size=window_size,
            input_size=input_size,
        )
        self.attn = SideAttention(
            dim,
            num_heads=num_heads,
            qkv_bias=True,
            use_rel_pos=True,
            input_size=input_size if window_size == 0 else (window_size, window_size),
        )
        self.drop_path = drop_path
        assert isinstance(self.mlp.act, nn.GELU) and self.mlp.act.approximate == "none"

    def _attention_branch(self, x: torch.Tensor) -> torch.Tensor:
        return self.attn(self.norm1(x), self.window_size)

    def _mlp_branch(self, x: torch.Tensor) -> torch.Tensor:
        return _GeluThenLinear.apply(self.mlp.lin1(self.norm2(x)), self.mlp.lin2.weight, self.mlp.lin2.bias)

    def _residual(self, x: torch.Tensor, branch: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        if not (self.training and self.drop_path > 0):
            return x + branch(x)
        keep = 1.0 - self.drop_path
        kept = (torch.rand(x.shape[0]) < keep).nonzero().flatten()
        if len(kept) == x.shape[0]:
            return x + branch(x) / keep
        # An empty selection still runs the branch (on no samples) so that every parameter
        # takes part in the graph, as DistributedDataParallel expects.
        kept = kept.to(x.device)
        return x.index_add(0, kept, branch(x.index_select(0, kept)) / keep)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self._residual(x, self._attention_branch)
        return self._residual(x, self._mlp_branch)


class SideViT(nn.Module):
    r"""Patch embedding, absolute positions (a 1 x (slot + ``pos_grid``\ :sup:`2`) x C table,
    its class slot unused, resized to the token grid) and ViTDet blocks whose global
    relative positions are sized for ``grid``; the neck of SAM's encoder is not used."""

    def __init__(
        self,
        width: int,
        depth: int,
        heads: int,
        patch_size: int,
        window_size: int,
        global_blocks: tuple[int, ...],
        grid: int,
        pos_grid: int,
        pos_class_slot: bool,
        mlp_ratio: float,
        drop_path: float,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.pos_grid = pos_grid
        self.pos_prefix = int(pos_class_slot)
        self.patch_embed = PatchEmbed(
            kernel_size=(patch_size, patch_size), stride=(patch_size, patch_size), embed_dim=width
        )
        self.pos_embed = nn.Parameter(torch.zeros(1, self.pos_prefix + pos_grid * pos_grid, width))
        trunc_normal_(self.pos_embed, std=0.02)
        rates = torch.linspace(0, drop_path, depth, device="cpu").tolist()  # numbers, even on the meta device
        self.blocks = nn.ModuleList(
            SideBlock(
                dim=width,
                num_heads=heads,
                mlp_ratio=mlp_ratio,
                window_size=0 if i in global_blocks else window_size,
                input_size=(grid, grid),
                drop_path=rates[i],
            )
            for i in range(depth)
        )

    def embed(self, image: torch.Tensor) -> torch.Tensor:
        """Image B x 3 x H x W (sides multiples of the patch size) -> tokens B x h x w x C."""
        x = self.patch_embed(image)
        return x + self.positions(tuple(x.shape[1:3])).to(x.dtype)

    def positions(self, grid: tuple[int, int]) -> torch.Tensor:
        """The position table without its class slot, resized (bicubic, align_corners=False,
        no antialiasing) to ``grid``: 1 x h x w x C, differentiable in the stored table."""
        table = resample_abs_pos_embed(
            self.pos_embed,
            list(grid),
            [self.pos_grid, self.pos_grid],
            num_prefix_tokens=self.pos_prefix,
            antialias=False,
        )
        return table[:, self.pos_prefix :].reshape(1, *grid, -1)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """The plain side ViT (no fusion): image -> B x h x w x C."""
        x = self.embed(image)
        for block in self.blocks:
            x = block(x)
        return x


def build_side_vit(settings: SideSettings) -> SideViT:
    """The side ViT of a setting, randomly initialized (weights.py loads MAE or SAM)."""
    return SideViT(
        width=settings.width,
        depth=settings.depth,
        heads=settings.heads,
        patch_size=settings.patch_size,
        window_size=settings.window_size,
        global_blocks=settings.global_blocks,
        grid=settings.grid,
        pos_grid=settings.pos_grid,
        pos_class_slot=settings.pos_class_slot,
        mlp_ratio=settings.mlp_ratio,
        drop_path=settings.drop_path,
    )
