"""Attention rollout (Abnar & Zuidema, ACL 2020; SPEC §6). Text-agnostic.

Per block ``Â = 0.5·mean_heads(A) + 0.5·I``, row-normalised; the rollout is ``Â_L ⋯ Â_1`` and the map
is its query row over the keys. Only that row is needed, so it is carried from the last block down
(``r ← r Â_l``, a vector-matrix product per block) instead of multiplying full matrices.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..towers.base import TokenTower, rows
from .base import MethodInfo, MethodOutput
from .common import cosine_scores, keys_of, same_for_every_text

INFO = MethodInfo(
    name="rollout",
    text_specific=False,
    needs_gradients=False,
    forwards_per_image="1 (one forward keeping every block's attention, no gradients; the map serves every text)",
    paper="Abnar & Zuidema, Quantifying Attention Flow in Transformers, ACL 2020",
    summary="product over blocks of (head-mean attention + identity)/2, query row over the keys",
)


def rollout(tower: TokenTower, inputs: Any, targets: Tensor) -> MethodOutput:
    """Attention rollout over all blocks of ``tower``.

    Returns maps ``[B, T, *grid]`` float32, identical for every text, and the model's cosine scores
    ``[B, T]`` (``scores`` = ``model_scores``).
    """
    batch = tower.embed(inputs)
    with torch.no_grad():
        x, probs = tower.run_blocks_with_attention(batch.x, tower.blocks, batch.attn_mask)
        embedding = tower.head(rows(x, batch.query))
        length = x.shape[1]
        r = F.one_hot(batch.query, length).float()  # [B, L]: the query row of the identity
        eye = torch.eye(length, device=x.device)
        for p in reversed(probs):
            a = 0.5 * p.mean(dim=1) + 0.5 * eye
            a = a / a.sum(dim=-1, keepdim=True)
            r = torch.einsum("bl,blm->bm", r, a)
    scores = cosine_scores(embedding, targets)
    maps = same_for_every_text(keys_of(r, batch), targets.shape[0], batch.grid)
    return MethodOutput(maps=maps, scores=scores, model_scores=scores)
