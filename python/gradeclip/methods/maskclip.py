"""MaskCLIP (Zhou et al., ECCV 2022; SPEC §6): dense features from the last block's value path.

The last block's query-key attention is dropped: each key position's own value ``v_i`` goes through
the attention's output projection (and layer scale, where the model has one — the attention
branch's contribution had the token attended only to itself), then the model's per-token head
(``ln_post`` and projection for a ViT). The map is the cosine of that dense feature with each text
embedding. No residual and no MLP on the value path, as in MaskCLIP's ViT variant.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..towers.base import TokenTower
from .base import MethodInfo, MethodOutput
from .common import cosine_scores, last_block_embedding

INFO = MethodInfo(
    name="maskclip",
    text_specific=True,
    needs_gradients=False,
    forwards_per_image="1 (one forward, no gradients; one matrix product serves all texts)",
    paper="Zhou, Loy & Dai, Extract Free Dense Labels from CLIP (MaskCLIP), ECCV 2022",
    summary="cosine of each key's value path (v → W_o → ln_post → projection) with the text embedding",
)


def maskclip(tower: TokenTower, inputs: Any, targets: Tensor) -> MethodOutput:
    """MaskCLIP similarity maps of ``inputs`` against unit-norm ``targets`` ``[T, E]`` (or per image ``[B, T, E]``).

    Returns maps ``[B, T, *grid]`` float32 (cosines in [-1, 1], zero at masked keys) and the model's
    cosine scores ``[B, T]`` (``scores`` = ``model_scores``).
    """
    batch = tower.embed(inputs)
    last = tower.blocks[-1]
    with torch.no_grad():
        x = tower.run_blocks(batch.x, tower.blocks[:-1], batch.attn_mask)
        embedding, _ = last_block_embedding(tower, batch, x)
        _, _, v = last.qkv(x[:, batch.keys])
        dense = F.normalize(tower.token_head(last.attention_update(v)).float(), dim=-1)  # [B, N, E]
        maps = torch.einsum("bne,bte->btn", dense, targets) if targets.ndim == 3 else torch.einsum("bne,te->btn", dense, targets)
    if batch.key_mask is not None:
        maps = maps * batch.key_mask[:, None]
    scores = cosine_scores(embedding, targets)
    return MethodOutput(maps=maps.reshape(*maps.shape[:2], *batch.grid), scores=scores, model_scores=scores)
