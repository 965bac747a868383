"""One residual attention block of an open_clip transformer, seen through what SPEC §2 needs.

Both of open_clip's block types are accepted (``ResidualAttentionBlock`` with
``nn.MultiheadAttention`` and ``CustomResidualAttentionBlock`` with its ``Attention``) as long as
they use plain scaled dot-product attention; variants that change the attention arithmetic
(QK-norm, scaled-cosine attention, head scaling, inner or post-attention norms) are refused,
because the q/k/v arithmetic of SPEC §2 would not describe them.
"""

from __future__ import annotations

from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError


def _is_identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


class BlockAdapter:
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
        """The model's own block forward on batch-first ``x`` ``[B, L, D]``."""
        if batch_first:
            return self.block(x, attn_mask=attn_mask)
        return self.block(x.transpose(0, 1), attn_mask=attn_mask).transpose(0, 1)

