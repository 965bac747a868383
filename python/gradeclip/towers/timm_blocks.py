"""timm's attention layers seen through what SPEC §2 needs: ViT ``Block``, EVA ``EvaBlock`` /
``EvaBlockPostNorm`` (rotary position embedding) and the ``AttentionPoolLatent`` "map" head.

Rotary position embedding (EVA02): the model rotates ``q`` and ``k`` of the patch positions (not
the class token) before the dot product. gradeclip uses the *rotated* ``q`` and ``k`` everywhere:
in the single-head re-run (so ``heads="model"`` reproduces the model exactly), and for the loosened
spatial weights ``λ = minmax cos(q_cls, k_i)``: λ loosens the attention the model computes, and
that attention compares rotated vectors. ``v`` is never rotated.

An inner attention norm (timm ``scale_norm`` / EVA02's ``scale_attn_inner``) and an output gate
act per token after the attention, so they belong to the rest of the block: ``o`` is the attention
output before them, and the channel weights are taken there. QK normalisation is refused, as for
open_clip blocks.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError
from .blocks import AttentionBlock, ExplainedAttention, QueryQKV


def _identity(module: nn.Module | None) -> bool:
    return module is None or isinstance(module, nn.Identity)


def _scaled(x: Tensor, scale: nn.Module | Tensor | None) -> Tensor:
    """Layer scale: timm's ``LayerScale`` module, EVA's ``gamma`` parameter, or nothing."""
    if scale is None:
        return x
    if isinstance(scale, Tensor):
        return x * scale
    return scale(x)


class TimmBlockAdapter(AttentionBlock):
    """A timm ViT ``Block`` or EVA ``EvaBlock`` / ``EvaBlockPostNorm``.

    ``rope`` is the rotary embedding of the patch grid (EVA), applied to ``q``/``k`` after the
    ``prefix`` class/register tokens; None for towers without one.
    """

    def __init__(self, block: nn.Module, where: str, rope: Tensor | None = None, prefix: int = 0):
        from timm.layers import Attention
        from timm.models.eva import EvaAttention, EvaBlock, EvaBlockPostNorm
        from timm.models.vision_transformer import Block

        attn = getattr(block, "attn", None)
        if not isinstance(block, (Block, EvaBlock, EvaBlockPostNorm)) or not isinstance(attn, (Attention, EvaAttention)):
            raise UnsupportedModelError(
                f"{where}: {type(block).__name__} with {type(attn).__name__} is not a timm ViT/EVA attention block gradeclip knows"
            )
        if not (_identity(attn.q_norm) and _identity(attn.k_norm)):
            raise UnsupportedModelError(f"{where}: attention with QK normalisation changes the q·k arithmetic that Grad-ECLIP explains")
        if getattr(block, "attn_mask", None) is not None:
            raise UnsupportedModelError(f"{where}: a block-local attention mask is not supported")
        self.block = self.module = block
        self.attn = attn
        self.heads = attn.num_heads
        self.width = attn.proj.in_features
        self.post_norm = isinstance(block, EvaBlockPostNorm)
        self.is_eva = isinstance(block, (EvaBlock, EvaBlockPostNorm))
        self.rope = rope
        self.prefix = prefix

    def _rotate(self, t: Tensor) -> Tensor:
        """Apply the rotary embedding to ``q`` or ``k`` ``[B, L, D]`` in the model's head layout."""
        if self.rope is None:
            return t
        from timm.layers.pos_embed_sincos import apply_rot_embed_cat

        batch, length, width = t.shape
        cells = self.rope.shape[-2]
        if length == self.prefix + cells:  # the full sequence: the prefix tokens are not rotated
            prefix = self.prefix
        elif length == cells:  # the patch tokens alone (dense per-patch methods)
            prefix = 0
        else:
            raise UnsupportedModelError(f"rotary embedding for {cells} patches cannot rotate a sequence of {length} tokens")
        th = t.reshape(batch, length, self.heads, width // self.heads).transpose(1, 2)  # [B, H, L, d]
        half = getattr(self.attn, "rotate_half", False)
        rotated = apply_rot_embed_cat(th[:, :, prefix:], self.rope, half=half).type_as(th)
        th = torch.cat([th[:, :, :prefix], rotated], dim=2)
        return th.transpose(1, 2).reshape(batch, length, width)

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``x`` ``[B, L, D]`` → ``q, k, v`` each ``[B, L, D_attn]``; ``q`` and ``k`` rotated where the model rotates them."""
        a = self.attn
        h = x if self.post_norm else self.block.norm1(x)
        if a.qkv is None:  # EVA with separate projections
            q, k, v = a.q_proj(h), a.k_proj(h), a.v_proj(h)
        else:
            bias = a.qkv.bias
            if getattr(a, "q_bias", None) is not None:  # EVA: fused weight, q/v bias, zero k bias
                bias = torch.cat((a.q_bias, a.k_bias, a.v_bias))
            q, k, v = F.linear(h, a.qkv.weight, bias).chunk(3, dim=-1)
        return self._rotate(q), self._rotate(k), v

    def out_proj(self, o: Tensor) -> Tensor:
        return self.attn.proj(o)

    def attention_update(self, o: Tensor) -> Tensor:
        """What the attention branch adds to the residual stream: inner norm → ``proj`` → layer scale
        (post-norm EVA: → ``norm1``). Refused for gated attention, whose gate depends on the input."""
        a = self.attn
        if getattr(a, "gate", None) is not None:
            raise UnsupportedModelError("a gated attention's update depends on the block input, not only on o")
        return self._update(a.proj(a.norm(o)))

    def _update(self, out: Tensor) -> Tensor:
        b = self.block
        if self.post_norm:
            return b.norm1(out)
        return _scaled(out, b.gamma_1) if self.is_eva else b.ls1(out)

    def finish(self, x: Tensor, o: Tensor) -> Tensor:
        """``o`` (the attention output, heads concatenated) → inner norm → gate → ``proj`` → layer
        scale → residual; then the MLP half of the block. Shapes ``[..., D]``."""
        b, a = self.block, self.attn
        out = a.norm(o)
        if getattr(a, "gate", None) is not None:
            out = out * a.gate(x if self.post_norm else b.norm1(x)).sigmoid()
        y = x + self._update(a.proj(out))
        if self.post_norm:
            return y + b.norm2(b.mlp(y))
        if self.is_eva:
            return y + _scaled(b.mlp(b.norm2(y)), b.gamma_2)
        return y + b.ls2(b.mlp(b.norm2(y)))

    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor:
        if self.is_eva:
            return self.block(x, rope=self.rope, attn_mask=attn_mask)
        return self.block(x, attn_mask=attn_mask)


class AttentionPoolLatentAdapter(ExplainedAttention):
    """timm's ``AttentionPoolLatent`` (the SigLIP "map" head): learned latent queries, separate ``q``
    and ``kv`` projections, no norm before them; then ``proj``, and ``x + mlp(norm(x))`` per query."""

    def __init__(self, pool: nn.Module, where: str):
        if not (_identity(pool.q_norm) and _identity(pool.k_norm)):
            raise UnsupportedModelError(f"{where}: a pooler with QK normalisation changes the q·k arithmetic that Grad-ECLIP explains")
        if pool.pos_embed is not None:
            raise UnsupportedModelError(f"{where}: a pooler with its own positional embedding is not supported")
        if pool.pool not in ("token", "avg"):
            raise UnsupportedModelError(f"{where}: pooler pool_type={pool.pool!r} gives no single pooled embedding")
        self.module = pool
        self.heads = pool.num_heads
        # "token" keeps the first latent's output, "avg" averages all latents
        self.queries = slice(0, 1) if pool.pool == "token" else slice(0, pool.latent_len)

    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        p = self.module
        q = p.q(p.latent[:, self.queries]).expand(x.shape[0], -1, -1)  # [B, Q, D]
        k, v = p.kv(x).chunk(2, dim=-1)
        return QueryQKV(q, k, v, None)

    def out_proj(self, o: Tensor) -> Tensor:
        return self.module.proj(o)

    def pooled(self, o: Tensor) -> Tensor:
        """The pooler's output ``[B, out]`` from its attention output at the explained queries ``[B, Q, D]``."""
        p = self.module
        z = p.proj(o)
        if p.mlp is not None:
            z = z + p.mlp(p.norm(z))
        return z.mean(dim=1)
