"""Raw attention (SPEC §6): the last block's attention of the query over the keys, averaged over the
model's heads. Text-agnostic: every text gets the same map."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..towers.base import TokenTower
from .base import MethodInfo, MethodOutput
from .common import cosine_scores, keys_of, last_block_embedding, same_for_every_text

INFO = MethodInfo(
    name="raw_attention",
    text_specific=False,
    needs_gradients=False,
    forwards_per_image="1 (one forward, no gradients; the map serves every text)",
    paper="none (the model's own attention weights; a text-agnostic baseline in Zhao et al., Grad-ECLIP, ICML 2024)",
    summary="last block's attention row of the query over the keys, mean over the model's heads",
)


def raw_attention(tower: TokenTower, inputs: Any, targets: Tensor) -> MethodOutput:
    """The last block's head-averaged attention of the query over the map's keys.

    Returns maps ``[B, T, *grid]`` float32, identical for every text (``info.text_specific`` is
    False), and the model's cosine scores ``[B, T]`` (``scores`` = ``model_scores``).
    """
    batch = tower.embed(inputs)
    with torch.no_grad():
        x = tower.run_blocks(batch.x, tower.blocks[:-1], batch.attn_mask)
        embedding, probs = last_block_embedding(tower, batch, x)
    maps = keys_of(probs[:, :, 0].mean(dim=1), batch)  # [B, N]
    scores = cosine_scores(embedding, targets)
    return MethodOutput(maps=same_for_every_text(maps, targets.shape[0], batch.grid), scores=scores, model_scores=scores)
