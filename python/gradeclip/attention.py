"""Attention arithmetic shared by every tower and method (SPEC §2 steps 1 and 3).

Shapes: ``B`` batch rows, ``L`` key positions, ``D`` attention width, ``H`` heads.
Everything here is plain differentiable PyTorch.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


def split_heads(x: Tensor, heads: int) -> Tensor:
    """``[..., L, D]`` → ``[..., H, L, D/H]`` (head ``h`` owns channels ``h·D/H … (h+1)·D/H − 1``)."""
    *lead, length, width = x.shape
    return x.reshape(*lead, length, heads, width // heads).transpose(-3, -2)


def merge_heads(x: Tensor) -> Tensor:
    """Inverse of :func:`split_heads`: ``[..., H, L, d]`` → ``[..., L, H·d]``."""
    *lead, heads, length, width = x.shape
    return x.transpose(-3, -2).reshape(*lead, length, heads * width)


def attention_probs(q: Tensor, k: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """Softmax attention probabilities, computed in float32.

    ``q``: ``[B, Lq, D]``, ``k``: ``[B, L, D]``, ``mask``: additive, broadcastable to
    ``[B, Lq, L]`` (``-inf`` where a key is hidden). Returns ``[B, H, Lq, L]`` float32.
    """
    qh = split_heads(q.float(), heads)
    kh = split_heads(k.float(), heads)
    logits = qh @ kh.transpose(-1, -2) / math.sqrt(qh.shape[-1])
    if mask is not None:
        logits = logits + mask.float().unsqueeze(-3)
    return logits.softmax(dim=-1)


def attend(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Multi-head (``heads`` > 1) or single-head (``heads`` = 1) attention without output projection.

    ``q``: ``[B, Lq, D]``, ``k``/``v``: ``[B, L, D]``. Returns ``(o, probs)``: ``o`` ``[B, Lq, D]``
    in ``v``'s dtype (heads concatenated), ``probs`` ``[B, H, Lq, L]`` float32.
    """
    probs = attention_probs(q, k, heads, mask)
    o = merge_heads(probs.to(v.dtype) @ split_heads(v, heads))
    return o, probs


def loosened_weights(q: Tensor, k: Tensor, heads: int, key_mask: Tensor | None = None) -> Tensor:
    """Loosened spatial weights λ (SPEC §2 step 3), per head.

    ``q``: ``[B, D]`` (the query row), ``k``: ``[B, N, D]`` (the map's keys), ``key_mask``:
    ``[B, N]`` bool (True = key counts) or None. Returns ``[B, H, N]`` float32: the cosine of the
    query with each key, min-max normalised over the valid keys of each row and head (all ones
    where max = min); zero at masked keys.
    """
    qh = split_heads(q.float().unsqueeze(1), heads)  # [B, H, 1, d]
    kh = split_heads(k.float(), heads)  # [B, H, N, d]
    cos = torch.nn.functional.cosine_similarity(qh, kh, dim=-1, eps=1e-12)  # [B, H, N]
    return min_max(cos, None if key_mask is None else key_mask.unsqueeze(1))


def min_max(x: Tensor, valid: Tensor | None = None) -> Tensor:
    """Min-max normalise ``x`` over its last axis, counting only ``valid`` entries.

    Returns a float32 tensor of ``x``'s shape with values in [0, 1]; a row whose valid entries are
    all equal becomes all ones there; invalid entries become zero.
    """
    x = x.float()
    if valid is None:
        lo = x.amin(dim=-1, keepdim=True)
        hi = x.amax(dim=-1, keepdim=True)
    else:
        lo = x.masked_fill(~valid, math.inf).amin(dim=-1, keepdim=True)
        hi = x.masked_fill(~valid, -math.inf).amax(dim=-1, keepdim=True)
    span = hi - lo
    out = torch.where(span > 0, (x - lo) / torch.where(span > 0, span, 1.0), torch.ones_like(x))
    return out if valid is None else out * valid
