"""GAME: generic attention-model explainability (Chefer, Gur & Wolf, ICCV 2021; SPEC §6).

The explained score is the model's cosine ``s``. Starting from ``R = I``, each block ``l`` (from
``start_layer`` to the last) updates ``R ← R + Ē_l R`` with ``Ē_l = mean_heads(ReLU(∂s/∂A_l ⊙ A_l))``;
the map is the query row of ``R`` over the keys. Since ``R = (I + Ē_L) ⋯ (I + Ē_1)``, only its query
row is carried (``r ← r + r Ē_l``, last block first), and the last block needs its query row only.

The paper's rule runs over all blocks (``start_layer=0``, the default); Chefer et al.'s CLIP
notebook, which the Grad-ECLIP authors ran, keeps the last block only (``start_layer=-1``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..towers.base import TokenTower
from .base import MethodInfo, MethodOutput
from .common import check_layer_index, cosine_scores, keys_of, last_block_embedding, text_gradients

INFO = MethodInfo(
    name="game",
    text_specific=True,
    needs_gradients=True,
    forwards_per_image="≈3 (one forward keeping attention; per text, a backward through the blocks from start_layer)",
    paper="Chefer, Gur & Wolf, Generic Attention-model Explainability for Interpreting Bi-Modal and Encoder-Decoder Transformers, ICCV 2021",
    summary="relevance R = Π(I + mean_heads(ReLU(∇A ⊙ A))) over the blocks, query row over the keys",
)


def game(tower: TokenTower, inputs: Any, targets: Tensor, *, start_layer: int = 0) -> MethodOutput:
    """GAME relevance maps of ``inputs`` against unit-norm ``targets`` ``[T, E]``.

    ``start_layer``: the first block whose attention contributes (negative counts from the end;
    ``-1`` = the last block only). Returns maps ``[B, T, *grid]`` float32 and the model's cosine
    scores ``[B, T]`` (``scores`` = ``model_scores``).
    """
    start = check_layer_index("start_layer", start_layer, len(tower.blocks))
    batch = tower.embed(inputs)
    with torch.no_grad():
        x = tower.run_blocks(batch.x, tower.blocks[:start], batch.attn_mask)
    # x requires grad so that every later attention lies in the graph even with frozen weights
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        x, probs = tower.run_blocks_with_attention(x, tower.blocks[start:-1], batch.attn_mask)
        embedding, last_row = last_block_embedding(tower, batch, x)
        scores = cosine_scores(embedding, targets)
    attention = [p.detach() for p in probs]
    last_attention = last_row.detach()[:, :, 0]  # [B, H, L]
    query = F.one_hot(batch.query, x.shape[1]).float()  # [B, L]
    maps = []
    for _, grads in text_gradients(scores, [*probs, last_row]):
        # the last block: r = e_q (I + Ē_L) = e_q + (query row of Ē_L)
        r = query[:, None] + torch.relu(grads[-1][:, :, :, 0] * last_attention[:, None]).mean(dim=2)  # [B, t, L]
        for a, g in zip(reversed(attention), reversed(grads[:-1])):
            cam = torch.relu(g * a[:, None]).mean(dim=2)  # [B, t, L, L]
            r = r + torch.einsum("btl,btlm->btm", r, cam)
        maps.append(keys_of(r, batch))
    out = torch.cat(maps, dim=1)
    scores = scores.detach()
    return MethodOutput(maps=out.reshape(*out.shape[:2], *batch.grid), scores=scores, model_scores=scores)
