"""The interface between towers and methods.

A *token tower* is a transformer tower (image or text) whose explained attention layers are
residual attention blocks: it turns its inputs into the token sequence entering block 0
(:class:`TokenBatch`), exposes its blocks (:class:`~gradeclip.towers.blocks.BlockAdapter`), and maps
the query position's final token to the embedding (``head``). Methods never reach into a model's
modules; they use only this interface. A new model family is one new adapter module.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..attention import attend
from ..errors import UnsupportedModelError
from .blocks import BlockAdapter


@dataclass(frozen=True)
class TokenBatch:
    """Token sequences entering a tower's first block, with where to look.

    Attributes:
        x: ``[B, L, D]`` tokens entering block 0 (after embedding and any pre-norm).
        attn_mask: additive mask ``[L, L]`` every block uses (``-inf`` = hidden), or None.
        query: ``[B]`` long, the query position of each row (class token, EOT, …).
        keys: ``[N]`` long, the positions whose importance forms the map.
        key_mask: ``[B, N]`` bool (True = the key counts for this row), or None when all count.
        grid: the shape one row's map takes (``(h, w)`` for images, ``(N,)`` for texts).
    """

    x: Tensor
    attn_mask: Tensor | None
    query: Tensor
    keys: Tensor
    key_mask: Tensor | None
    grid: tuple[int, ...]


def rows(x: Tensor, index: Tensor) -> Tensor:
    """Pick one position per batch row: ``x`` ``[B, L, ...]``, ``index`` ``[B]`` → ``[B, ...]``."""
    return x[torch.arange(x.shape[0], device=x.device), index]


class TokenTower(ABC):
    """A transformer tower explained through its residual attention blocks."""

    #: human-readable description used in messages, e.g. ``"open_clip ViT (width 768, 12 blocks)"``
    description: str
    #: the tower's blocks, first to last
    blocks: list[BlockAdapter]
    #: width E of the tower's embedding
    embed_dim: int
    #: whether the model's blocks take ``[B, L, D]`` (True) or ``[L, B, D]`` (False)
    batch_first: bool

    @abstractmethod
    def embed(self, inputs: Any) -> TokenBatch:
        """Validate ``inputs`` and return the tokens entering block 0, with query and key positions."""

    @abstractmethod
    def head(self, z: Tensor) -> Tensor:
        """The query position's final token ``[B, D]`` → the unnormalised embedding ``[B, E]``."""

    def token_head(self, z: Tensor) -> Tensor:
        """The head applied to every token: final tokens ``[..., D]`` → ``[..., E]`` in the embedding space.

        Dense (per-patch) methods such as MaskCLIP and CLIP Surgery project every token the way the
        query token is projected. Towers whose head is not per-token (attention poolers) raise
        :class:`UnsupportedModelError`.
        """
        raise UnsupportedModelError(f"{self.description}: the head is not a per-token projection, so dense per-token features are undefined")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the tower computes in."""
        return self.blocks[0].attn.in_proj_weight.dtype

    @property
    def device(self) -> torch.device:
        """The device the tower's weights live on."""
        return self.blocks[0].attn.in_proj_weight.device

    def run_blocks(self, x: Tensor, blocks: list[BlockAdapter], attn_mask: Tensor | None) -> Tensor:
        """Run ``blocks`` (the model's own forward) on batch-first ``x`` ``[B, L, D]``."""
        for block in blocks:
            x = block.forward(x, attn_mask, self.batch_first)
        return x

    def run_blocks_with_attention(
        self, x: Tensor, blocks: list[BlockAdapter], attn_mask: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Run ``blocks`` on batch-first ``x`` ``[B, L, D]`` with the model's heads, recomputed from the
        blocks' own weights so that each block's attention probabilities are available.

        Returns ``(x_out [B, L, D], probs)`` with ``probs[j]`` ``[B, H, L, L]`` float32, block ``j``'s
        softmax attention (rows = queries). Differentiable: under autograd, ``probs[j]`` lie on the
        path from ``x`` to ``x_out``, so gradients with respect to them are the model's.
        """
        probs = []
        for block in blocks:
            q, k, v = block.qkv(x)
            o, p = attend(q, k, v, block.heads, attn_mask)
            x = block.finish(x, o)
            probs.append(p)
        return x, probs

    def encode(self, inputs: Any) -> Tensor:
        """The model's own, unmodified embedding ``[B, E]`` (unnormalised) of ``inputs``."""
        batch = self.embed(inputs)
        x = self.run_blocks(batch.x, self.blocks, batch.attn_mask)
        return self.head(rows(x, batch.query))
