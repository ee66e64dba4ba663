"""The two learned prompt contexts (real, fake) spliced into a tokenized template.

The template ``"X X ... X an image."`` is tokenized once with open_clip's tokenizer; its
``n_ctx`` ``X`` tokens after the start token are replaced by learned vectors, one set for
"real" and one for "fake". Only the positions up to the end token are kept, which is all the
frozen text tower needs (see ``FrozenCLIP.encode_prompts``). The token ids are data of the
template, not weights: they are read on the CPU whatever device the network is built on (the
meta device included), kept as plain integers, and the ``tokens`` buffer is made from them.
"""

from __future__ import annotations

import functools

import open_clip
import torch
from torch import nn


@functools.cache
def template_tokens(template: str, tokenizer: str, n_ctx: int) -> tuple[int, ...]:
    """The token ids of ``template`` up to and including its end token; the ``n_ctx`` words
    after the start token must be one repeated placeholder."""
    with torch.device("cpu"):  # a meta or GPU default device must not reach the tokenizer's tensors
        ids = open_clip.get_tokenizer(tokenizer)([template])[0].tolist()
    eot_index = max(range(len(ids)), key=ids.__getitem__)  # the end token has the largest id
    placeholder = ids[1]
    if eot_index <= n_ctx or any(token != placeholder for token in ids[1 : 1 + n_ctx]):
        raise ValueError(f"template {template!r} must start with {n_ctx} identical placeholder words")
    return tuple(ids[: eot_index + 1])


class PromptLearner(nn.Module):
    """Contexts 2 x ``n_ctx`` x ``width`` (index 0 real, 1 fake) and the template's tokens."""

    def __init__(self, n_ctx: int, width: int, template: str, tokenizer: str) -> None:
        super().__init__()
        self.token_ids = template_tokens(template, tokenizer, n_ctx)
        self.n_ctx = n_ctx
        self.eot_index = len(self.token_ids) - 1
        self.contexts = nn.Parameter(torch.randn(2, n_ctx, width) * 0.02)
        self.register_buffer("tokens", torch.empty(0, dtype=torch.long), persistent=False)
        self.rebuild_buffers()

    def rebuild_buffers(self) -> None:
        """``tokens`` (1 x L) on the device of the contexts: the only state the weights do not hold."""
        self.tokens = torch.tensor([self.token_ids], dtype=torch.long, device=self.contexts.device)

    def forward(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        """The template's token embeddings 1 x L x W -> prompts 2 x L x W (real, fake)."""
        template = token_embeddings.expand(2, -1, -1)
        contexts = self.contexts.to(template.dtype)
        return torch.cat([template[:, :1], contexts, template[:, 1 + self.n_ctx :]], dim=1)
