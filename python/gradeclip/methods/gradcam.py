"""Grad-CAM (Selvaraju et al., ICCV 2017) on the tokens entering the last block (SPEC §6).

The explained score is the model's own cosine ``s = cos(e_I, e_T)``. With ``x`` ``[L, D]`` the tokens
entering the last block (the output of the one before, as in the Grad-ECLIP paper: the last block's
patch outputs do not reach the class token), the channel weights are the mean over the map's keys of
``∂s/∂x``, and the map is ``ReLU(Σ_c w_c x_{i,c})`` at each key ``i``.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ..towers.base import TokenTower
from .base import MethodInfo, MethodOutput
from .common import cosine_scores, last_block_embedding, text_gradients

INFO = MethodInfo(
    name="gradcam",
    text_specific=True,
    needs_gradients=True,
    forwards_per_image="≈1.2 (one forward; per text, a backward through the last block only)",
    paper="Selvaraju et al., Grad-CAM: Visual Explanations from Deep Networks via Gradient-based Localization, ICCV 2017",
    summary="gradient-weighted tokens entering the last block: ReLU(Σ_c mean_i(∂s/∂x_ic) · x_ic)",
)


def gradcam(tower: TokenTower, inputs: Any, targets: Tensor) -> MethodOutput:
    """Grad-CAM maps of ``inputs`` against unit-norm ``targets`` ``[T, E]`` (or per image ``[B, T, E]``).

    Returns maps ``[B, T, *grid]`` float32 and the model's cosine scores ``[B, T]`` (the explained
    score is the model's: ``scores`` = ``model_scores``).
    """
    batch = tower.embed(inputs)
    with torch.no_grad():
        x = tower.run_blocks(batch.x, tower.blocks[:-1], batch.attn_mask)
    x = x.detach().requires_grad_()
    with torch.enable_grad():
        embedding, _ = last_block_embedding(tower, batch, x)
        scores = cosine_scores(embedding, targets)
    features = x.detach()[:, batch.keys].float()  # [B, N, D]
    valid = None if batch.key_mask is None else batch.key_mask.float()  # [B, N]
    maps = []
    for _, (grad,) in text_gradients(scores, [x]):
        g = grad[:, :, batch.keys]  # [B, t, N, D]
        if valid is None:
            weights = g.mean(dim=2)
        else:
            weights = (g * valid[:, None, :, None]).sum(dim=2) / valid.sum(dim=1).clamp_min(1)[:, None, None]
        m = torch.relu(torch.einsum("btd,bnd->btn", weights, features))
        maps.append(m if valid is None else m * valid[:, None])
    out = torch.cat(maps, dim=1)
    scores = scores.detach()
    return MethodOutput(maps=out.reshape(*out.shape[:2], *batch.grid), scores=scores, model_scores=scores)
