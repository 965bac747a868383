"""Hugging Face ``transformers`` attention blocks seen through what SPEC §2 needs.

- :class:`PreNormBlock`: CLIP's ``CLIPEncoderLayer`` and BLIP's vision ``BlipEncoderLayer``
  (``layer_norm1`` → attention → residual; ``layer_norm2`` → MLP → residual). CLIP projects q, k, v
  separately, BLIP with one fused ``qkv``.
- :class:`PostNormBertBlock`: BLIP's BERT text layer (attention on the raw input, then
  ``LayerNorm(x + dense(o))``, then ``LayerNorm(y + MLP(y))``), used without cross-attention.

Masks are additive, ``[L, L]`` or ``[B, L, L]``; the layers get them as ``[B or 1, 1, L, L]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .blocks import AttentionBlock


def _layer_mask(attn_mask: Tensor | None) -> Tensor | None:
    if attn_mask is None:
        return None
    return attn_mask.unsqueeze(-3) if attn_mask.ndim == 3 else attn_mask[None, None]


def _hidden(out: Tensor | tuple[Tensor, ...]) -> Tensor:
    return out[0] if isinstance(out, tuple) else out


class PreNormBlock(AttentionBlock):
    """A pre-norm HF encoder layer (CLIP / BLIP vision)."""

    def __init__(self, layer: nn.Module, where: str):
        attn = getattr(layer, "self_attn", None)
        if attn is None or not hasattr(layer, "layer_norm1") or not hasattr(layer, "mlp"):
            raise UnsupportedModelError(f"{where}: {type(layer).__name__} is not a CLIP/BLIP encoder layer")
        if not (hasattr(attn, "qkv") or all(hasattr(attn, n) for n in ("q_proj", "k_proj", "v_proj"))):
            raise UnsupportedModelError(f"{where}: {type(attn).__name__} has neither q/k/v nor fused qkv projections")
        self.layer = self.module = layer
        self.attn = attn
        self.heads = attn.num_heads
        self.width = attn.embed_dim

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        h = self.layer.layer_norm1(x)
        a = self.attn
        if hasattr(a, "qkv"):
            return a.qkv(h).chunk(3, dim=-1)
        return a.q_proj(h), a.k_proj(h), a.v_proj(h)

    def out_proj(self, o: Tensor) -> Tensor:
        a = self.attn
        return a.projection(o) if hasattr(a, "projection") else a.out_proj(o)

    def attention_update(self, o: Tensor) -> Tensor:
        return self.out_proj(o)

    def finish(self, x: Tensor, o: Tensor) -> Tensor:
        y = x + self.attention_update(o)
        return y + self.layer.mlp(self.layer.layer_norm2(y))

    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor:
        return _hidden(self.layer(x, attention_mask=_layer_mask(attn_mask)))


class PostNormBertBlock(AttentionBlock):
    """BLIP's BERT text layer (``BlipTextLayer``), self-attention only."""

    def __init__(self, layer: nn.Module, where: str):
        attention = getattr(layer, "attention", None)
        if attention is None or not hasattr(attention, "self") or not hasattr(layer, "intermediate"):
            raise UnsupportedModelError(f"{where}: {type(layer).__name__} is not a BERT layer")
        self.layer = self.module = layer
        self.attn = attention.self
        self.heads = self.attn.num_attention_heads
        self.width = self.attn.all_head_size

    def qkv(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        a = self.attn
        return a.query(x), a.key(x), a.value(x)

    def out_proj(self, o: Tensor) -> Tensor:
        return self.layer.attention.output.dense(o)

    def attention_update(self, o: Tensor) -> Tensor:
        raise UnsupportedModelError("a post-norm BERT layer normalises after the residual sum: its attention update is not additive")

    def finish(self, x: Tensor, o: Tensor) -> Tensor:
        out = self.layer.attention.output
        y = out.LayerNorm(out.dense(o) + x)
        ffn = self.layer.output
        return ffn.LayerNorm(ffn.dense(self.layer.intermediate(y)) + y)

    def forward(self, x: Tensor, attn_mask: Tensor | None, batch_first: bool) -> Tensor:
        return _hidden(self.layer(x, attention_mask=_layer_mask(attn_mask)))


def causal_mask(length: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """Additive ``[L, L]`` causal mask: ``-inf`` above the diagonal, 0 elsewhere."""
    return torch.full((length, length), float("-inf"), dtype=dtype, device=device).triu(1)


def key_padding_mask(valid: Tensor, dtype: torch.dtype) -> Tensor:
    """Additive ``[B, L, L]`` mask hiding the keys where ``valid`` ``[B, L]`` is False (an expanded view)."""
    add = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))
    return add.unsqueeze(1).expand(-1, valid.shape[1], -1)

