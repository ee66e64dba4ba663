"""The two learned prompt contexts (real, fake) spliced into a tokenized template.

The template ``"X X ... X an image."`` is tokenized once with open_clip's tokenizer; its
``n_ctx`` ``X`` tokens after the start token are replaced by learned vectors, one set for
"real" and one for "fake". Only the positions up to the end token are kept, which is all the
frozen text tower needs (see ``FrozenCLIP.encode_prompts``).
"""

from __future__ import annotations

import open_clip
import torch
from torch import nn


class PromptLearner(nn.Module):
    """Contexts 2 x ``n_ctx`` x ``width`` (index 0 real, 1 fake) and the template's tokens."""

    def __init__(self, n_ctx: int, width: int, template: str, tokenizer: str) -> None:
        super().__init__()
        tokens = open_clip.get_tokenizer(tokenizer)([template])[0]
        eot_index = int(tokens.argmax())
        placeholder = tokens[1]
        if eot_index <= n_ctx or not bool((tokens[1 : 1 + n_ctx] == placeholder).all()):
            raise ValueError(f"template {template!r} must start with {n_ctx} identical placeholder words")
        self.n_ctx = n_ctx
        self.eot_index = eot_index
        self.register_buffer("tokens", tokens[: eot_index + 1].unsqueeze(0), persistent=False)
        self.contexts = nn.Parameter(torch.randn(2, n_ctx, width) * 0.02)

    def forward(self, token_embeddings: torch.Tensor) -> torch.Tensor:
        """The template's token embeddings 1 x L x W -> prompts 2 x L x W (real, fake)."""
        template = token_embeddings.expand(2, -1, -1)
        contexts = self.contexts.to(template.dtype)
        return torch.cat([template[:, :1], contexts, template[:, 1 + self.n_ctx :]], dim=1)
