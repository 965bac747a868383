"""The PyTorch path of the map step (SPEC §2 steps 3–4): fallback and the Triton kernel's oracle.

``maps[b, t, i] = ReLU( Σ_h λ[b, h, i] · Σ_{c ∈ head h} G[b, t, c] · v[b, i, c] )``
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..attention import loosened_weights, split_heads


def spatial_weights(
    q: Tensor,
    k: Tensor,
    spatial: str,
    heads: int,
    probs: Tensor | None = None,
    key_mask: Tensor | None = None,
) -> Tensor:
    """λ for the three ``spatial`` options. Returns ``[B, H, N]`` float32.

    ``q`` ``[B, D]`` and ``k`` ``[B, N, D]`` are used by ``"loosened"``; ``probs`` ``[B, H, N]`` (the
    query row's attention probabilities over the map keys) by ``"softmax"``; ``"none"`` gives ones.
    Masked keys (``key_mask`` False) get λ = 0.
    """
    if spatial == "loosened":
        return loosened_weights(q, k, heads, key_mask)
    if spatial == "softmax":
        if probs is None:
            raise ValueError("spatial='softmax' needs the attention probabilities")
        lam = probs.float()
    elif spatial == "none":
        lam = torch.ones(k.shape[0], heads, k.shape[1], device=k.device)
    else:
        raise ValueError(f"unknown spatial option {spatial!r}")
    return lam if key_mask is None else lam * key_mask.unsqueeze(1)


def head_contributions(v: Tensor, g: Tensor, lam: Tensor) -> Tensor:
    """Per-head terms before the ReLU: ``λ[b,h,i] · Σ_{c∈h} G[b,t,c] v[b,i,c]``.

    ``v`` ``[B, N, D]``, ``g`` ``[B, T, D]``, ``lam`` ``[B, H, N]``. Returns ``[B, T, H, N]`` float32.
    """
    heads = lam.shape[1]
    vh = split_heads(v.float(), heads)  # [B, H, N, d]
    gh = split_heads(g.float(), heads)  # [B, H, T, d]
    per_head = gh @ vh.transpose(-1, -2)  # [B, H, T, N]
    return (per_head * lam.unsqueeze(2)).transpose(1, 2)


def maps_torch(v: Tensor, g: Tensor, lam: Tensor) -> Tensor:
    """Grad-ECLIP maps from values, channel weights and spatial weights.

    ``v`` ``[B, N, D]``, ``g`` ``[B, T, D]``, ``lam`` ``[B, H, N]`` (H divides D). Returns
    ``[B, T, N]`` float32, ``ReLU(Σ_h head_contributions)``.
    """
    if lam.shape[1] == 1:  # one head: a single batched GEMM, no [B, T, H, N] intermediate
        return torch.relu((g.float() @ v.float().transpose(-1, -2)) * lam)
    return torch.relu(head_contributions(v, g, lam).sum(dim=2))
