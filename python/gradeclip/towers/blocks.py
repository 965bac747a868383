"""The attention layers Grad-ECLIP explains, seen through what SPEC §2 needs.

Two kinds of layer, one interface for the engine:

- :class:`ExplainedAttention` — any attention whose *query rows* feed the embedding: it gives the
  query rows' ``q`` and every position's ``k`` and ``v`` (:meth:`~ExplainedAttention.query_qkv`)
  and its output projection. Attention poolers (``AttentionPool2d``, learned-query poolers) are
  only this: they are always the last explained layer.
- :class:`AttentionBlock` — a residual self-attention block (token sequence in, token sequence
  out): additionally the full ``q, k, v``, the per-token rest of the block (``finish``) and the
  model's own forward, so several of them can be explained in a row (SPEC §2 step 5).

:class:`BlockAdapter` is open_clip's residual attention block. Both of open_clip's block types are
accepted (``ResidualAttentionBlock`` with ``nn.MultiheadAttention`` and
``CustomResidualAttentionBlock`` with its ``Attention``) as long as they use plain scaled
dot-product attention; variants that change the attention arithmetic (QK-norm, scaled-cosine
attention, head scaling, inner or post-attention norms) are refused, because the q/k/v arithmetic
of SPEC §2 would not describe them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError


class QueryQKV(NamedTuple):
    """The explained attention's inputs at its query rows (batch-first).

    Attributes:
        q: ``[B, Q, D]`` the Q query rows' queries (Q = 1 for a class token or EOT; the number of
            learned queries that feed the embedding for a learned-query pooler).
        k: ``[B, L, D]`` every position's keys.
        v: ``[B, L, D]`` every position's values.
        mask: additive ``[B, Q, L]`` mask of the query rows (``-inf`` = hidden), or None.
    """

    q: Tensor
    k: Tensor
    v: Tensor
    mask: Tensor | None


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def mask_rows(attn_mask: Tensor | None, query: Tensor) -> Tensor | None:
    """The query rows of an additive mask: ``attn_mask`` ``[L, L]`` or ``[B, L, L]``, ``query`` ``[B]``
    → ``[B, 1, L]`` (None stays None)."""
    if attn_mask is None:
        return None
    if attn_mask.ndim == 2:
        return attn_mask[query].unsqueeze(1)
    return attn_mask[torch.arange(attn_mask.shape[0], device=attn_mask.device), query].unsqueeze(1)


class ExplainedAttention(ABC):
    """An attention whose output at its query rows feeds the embedding (SPEC §1).

    Attributes:
        module: the model's module (its parameters give the tower's dtype and device).
        heads: the model's number of heads.
    """

    module: nn.Module
    heads: int

    @abstractmethod
    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        """The attention's ``q`` at its query rows and ``k``, ``v`` at every position, from the tokens
        ``x`` ``[B, L, D]`` entering it; ``query`` ``[B]`` the query position of each row (None for
        learned queries), ``attn_mask`` the tower's additive mask (``[L, L]``, ``[B, L, L]`` or None)."""

    @abstractmethod
    def out_proj(self, o: Tensor) -> Tensor:
        """The attention's output projection on ``[..., D]`` (used by ``qk_space="out_proj"``)."""

    # What only residual self-attention blocks have. Methods that need it (the baselines that
    # re-run blocks, dense per-token features) get a typed refusal from an attention pooler.
    def _not_a_block(self, what: str) -> UnsupportedModelError:
        return UnsupportedModelError(
            f"{type(self).__name__}: the explained attention is an attention pooler, not a residual self-attention "
            f"block, so it has no {what}; this method needs self-attention blocks"
        )

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``[..., L, D]`` (the block's input) → ``q, k, v`` each ``[..., L, D]``."""
        raise self._not_a_block("self-attention q, k, v")

    def attention_update(self, o: Tensor) -> Tensor:
        """What the attention branch adds to the residual stream, from ``o`` ``[..., D]``."""
        raise self._not_a_block("residual attention update")

    def finish(self, x: Tensor, o: Tensor) -> Tensor:
        """The per-token rest of the block from its input ``x`` and attention output ``o`` (both
        ``[..., D]``, before the output projection); returns the block's output token, same shape."""
        raise self._not_a_block("per-token rest of a block")

    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor:
        """The model's own block forward on batch-first ``x`` ``[B, L, D]``."""
        raise self._not_a_block("block forward")


class AttentionBlock(ExplainedAttention):
    """A residual self-attention block (batch-first tensors ``[B, L, D]``): implements ``qkv``,
    ``finish`` and ``forward`` (and ``attention_update`` where the block is pre-norm)."""

    @abstractmethod
    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    @abstractmethod
    def finish(self, x: Tensor, o: Tensor) -> Tensor: ...

    @abstractmethod
    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor: ...

    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        if query is None:
            raise UnsupportedModelError("a self-attention block is explained at a query position, and the tower names none")
        q, k, v = self.qkv(x)
        return QueryQKV(q[torch.arange(x.shape[0], device=x.device), query].unsqueeze(1), k, v, mask_rows(attn_mask, query))


class BlockAdapter(AttentionBlock):
    """Accessors for one open_clip residual attention block (batch-first tensors ``[B, L, D]``)."""

    def __init__(self, block: nn.Module, where: str):
        attn = getattr(block, "attn", None)
        if attn is None or not hasattr(block, "ln_1") or not hasattr(block, "mlp"):
            raise UnsupportedModelError(f"{where}: {type(block).__name__} is not an open_clip residual attention block")
        if isinstance(attn, nn.MultiheadAttention):
            if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn:
                raise UnsupportedModelError(f"{where}: nn.MultiheadAttention with separate k/v dims or bias_k is not supported")
            if hasattr(block, "ln_1_kv"):
                raise UnsupportedModelError(f"{where}: cross-attention blocks cannot be the explained self-attention")
            self.heads = attn.num_heads
        else:
            refused = [
                name
                for name, present in (
                    ("scaled cosine attention", getattr(attn, "logit_scale", None) is not None),
                    ("head scaling", getattr(attn, "head_scale", None) is not None),
                    ("QK normalisation", not _is_identity(getattr(attn, "ln_q", None))),
                    ("inner attention norm", not _is_identity(getattr(attn, "ln_inner", None))),
                    ("post-attention norm", not _is_identity(getattr(block, "ln_attn", None))),
                )
                if present
            ]
            if refused:
                raise UnsupportedModelError(
                    f"{where}: attention with {', '.join(refused)} changes the q·k arithmetic that Grad-ECLIP explains"
                )
            if not hasattr(attn, "in_proj_weight") or not hasattr(attn, "num_heads"):
                raise UnsupportedModelError(f"{where}: {type(attn).__name__} attention is not supported")
            self.heads = attn.num_heads
        self.block = block
        self.module = block
        self.attn = attn
        self.width = attn.in_proj_weight.shape[1]

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``[..., L, D]`` (the block's input) → ``q, k, v`` each ``[..., L, D]`` (after ``ln_1``)."""
        h = self.block.ln_1(x)
        return F.linear(h, self.attn.in_proj_weight, self.attn.in_proj_bias).chunk(3, dim=-1)

    def out_proj(self, o: Tensor) -> Tensor:
        """The attention's output projection ``o W_oᵀ + b_o`` on ``[..., D]``."""
        return self.attn.out_proj(o)

    def attention_update(self, o: Tensor) -> Tensor:
        """What the attention branch adds to the residual stream: ``ls1(o W_oᵀ + b_o)`` on ``[..., D]``
        (``ls1`` is the layer scale, identity where the model has none)."""
        return self.block.ls_1(self.out_proj(o))

    def finish(self, x: Tensor, o: Tensor) -> Tensor:
        """The per-token rest of the block: ``y = x + ls1(o W_o + b_o)``, ``z = y + ls2(mlp(ln_2(y)))``.

        ``x`` and ``o`` share a shape ``[..., D]``; returns ``z`` of that shape.
        """
        y = x + self.attention_update(o)
        return y + self.block.ls_2(self.block.mlp(self.block.ln_2(y)))

    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor:
        """The model's own block forward on batch-first ``x`` ``[B, L, D]`` (``attn_mask`` ``[L, L]``,
        or ``[B, L, L]`` repeated per head as ``nn.MultiheadAttention`` wants it)."""
        if attn_mask is not None and attn_mask.ndim == 3:
            attn_mask = attn_mask.repeat_interleave(self.heads, dim=0)
        if batch_first:
            return self.block(x, attn_mask=attn_mask)
        return self.block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)
