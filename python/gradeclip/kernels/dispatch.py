"""Choose the implementation of the map step. This is the only place a backend is picked."""

from __future__ import annotations

from torch import Tensor

from .maps_torch import maps_torch, spatial_weights


def compute_maps(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    spatial: str,
    heads: int,
    probs: Tensor | None = None,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Grad-ECLIP maps over the map keys (SPEC §2 steps 3–4).

    ``q`` ``[B, D]`` query row and ``k`` ``[B, N, D]`` keys (both in the chosen qk space),
    ``v`` ``[B, N, D]`` values, ``g`` ``[B, T, D]`` channel weights, ``probs`` ``[B, H, N]``
    (for ``spatial="softmax"``), ``key_mask`` ``[B, N]`` bool. Returns ``[B, T, N]`` float32.
    """
    lam = spatial_weights(q, k, spatial, heads, probs, key_mask)
    return maps_torch(v, g, lam)
