"""Grad-ECLIP textual explanation (SPEC §3): the same engine, run on the text tower.

The T texts are the tower's batch and the B images' unit embeddings are the targets, so one
text-tower forward and one batched vector-Jacobian product give every (image, text) pair; the
engine's ``[T, B, …]`` output is transposed to ``[B, T, …]``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..towers.base import TextTower
from .base import MethodOutput
from .gradeclip import grad_eclip


def token_importance(maps: Tensor, reported: Tensor, length: int) -> Tensor:
    """Token importance from text maps (SPEC §3, last step).

    ``maps`` ``[B, T, n]`` (the summed per-layer maps over positions ``0..n-1``), ``reported``
    ``[T, length]`` bool, the positions whose importance is reported (for EOT-pooled towers, those
    strictly between the start token and EOT). Columns past ``length`` are keys that are no token
    of the ids (CoCa's appended class token) and are dropped. Returns float32 ``[B, T, length]``:
    the maps at the reported positions, zero elsewhere, each row divided by its sum (a row that is
    all zero stays all zero).
    """
    maps = maps[..., :length]
    inside = reported[:, : maps.shape[-1]].to(maps.device)  # [T, n]
    kept = maps.float() * inside
    total = kept.sum(dim=-1, keepdim=True)
    kept = torch.where(total > 0, kept / torch.where(total > 0, total, 1.0), kept)
    return torch.nn.functional.pad(kept, (0, length - maps.shape[-1]))


def grad_eclip_text(
    tower: TextTower,
    tokens: Tensor,
    image_targets: Tensor,
    *,
    heads: str,
    n_layers: int,
    qk_space: str = "attention",
    lambda_keys: str = "attended",
    relu: str = "per_layer",
) -> MethodOutput:
    """Grad-ECLIP token importance of texts ``tokens`` ``[T, L]`` against unit-norm image embeddings
    ``image_targets`` ``[B, E]``; ``qk_space``, ``lambda_keys`` and ``relu`` as in
    :func:`~gradeclip.methods.gradeclip.grad_eclip` (the last two give the authors' form, SPEC §3 (a), (b)).

    Returns a :class:`MethodOutput` with ``maps`` = the importance ``[B, T, L]`` float32 (each row
    sums to 1 or is all zero), ``scores`` ``[B, T]`` (the explained forward's cosine) and
    ``model_scores`` ``[B, T]`` (the unmodified model's cosine).
    """
    out = grad_eclip(tower, tokens, image_targets, heads=heads, n_layers=n_layers, qk_space=qk_space, lambda_keys=lambda_keys, relu=relu)
    importance = token_importance(out.maps.transpose(0, 1), tower.reported(tokens.to(tower.device)), tokens.shape[1])
    return MethodOutput(maps=importance, scores=out.scores.T, model_scores=out.model_scores.T)
