"""CLIP Surgery (Li, Wang, Duan & Li, 2023, arXiv:2304.05653), on the model's own weights.

*Architecture surgery.* From the block ``len(blocks) - surgery_blocks`` on, a second path runs
beside the model's: each such block computes v–v self-attention (queries and keys replaced by the
values ``v`` of the model path's ``ln_1`` input, the model's heads, scale ``1/sqrt(head width)``),
passes it through the block's output projection (and layer scale, where the model has one) and adds
it to the new path, which skips the MLPs. The new path starts from the tokens entering the first
surgery block; the model path is untouched, and its query token replaces the new path's. Every token
of the new path then goes through the model's per-token head and is normalised (per token: the
authors' demo normalised over the token axis, a bug they later fixed).

*Feature surgery* (``feature_surgery``), with ``f`` a key's unit feature and ``t`` the unit text
embeddings:

- ``"texts"`` (T ≥ 2): ``c_t = f·t``, ``w = softmax(2c) / mean_t softmax(2c)``, map
  ``w_t c_t − mean_t'(w_t' c_t')`` — the redundant feature is the weighted mean over the texts;
- ``"redundant"``: ``f·(t − r)`` with ``r`` the unit embedding ``redundant`` (the authors use the
  empty prompt ``""`` for a single text; :class:`~gradeclip.Explainer` encodes it when it has a
  tokenizer);
- ``"none"``: ``f·t`` (architecture surgery only);
- ``"auto"`` (default): ``"texts"`` when T ≥ 2, ``"redundant"`` when T = 1, as published.

The authors use the last 6 blocks (``surgery_blocks``, default ``min(6, depth)``) and prompt-ensembled text
embeddings (85 templates); gradeclip explains the embeddings it is given.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..attention import attend
from ..errors import InputError
from ..towers.base import TokenBatch, TokenTower, rows
from .base import MethodInfo, MethodOutput
from .common import check_int, cosine_scores

FEATURE_SURGERY = ("auto", "texts", "redundant", "none")
SURGERY_BLOCKS = 6  # the authors' choice (the last 6 of ViT-B's 12 blocks)

INFO = MethodInfo(
    name="clip_surgery",
    text_specific=True,
    needs_gradients=False,
    forwards_per_image="≈1.2 (one forward plus v–v attention in the surgery blocks, no gradients; serves all texts)",
    paper="Li, Wang, Duan & Li, CLIP Surgery for Better Explainability with Enhancement in Open-Vocabulary Tasks, arXiv:2304.05653, 2023",
    summary="v–v attention path in the last blocks (architecture surgery) minus the features shared by the texts (feature surgery)",
    text_options=(("redundant", ""),),
)


def surgery_features(tower: TokenTower, inputs: Any, surgery_blocks: int) -> tuple[Tensor, Tensor, TokenBatch]:
    """Architecture surgery: ``(features [B, N, E] unit-norm float32 at the keys, model embedding
    [B, E], batch)``."""
    batch = tower.embed(inputs)
    first = len(tower.blocks) - surgery_blocks
    with torch.no_grad():
        x = tower.run_blocks(batch.x, tower.blocks[:first], batch.attn_mask)
        new = x
        for block in tower.blocks[first:]:
            _, _, v = block.qkv(x)
            o, _ = attend(v, v, v, block.heads, batch.attn_mask)
            new = new + block.attention_update(o)
            x = block.forward(x, batch.attn_mask, tower.batch_first)
        embedding = tower.head(rows(x, batch.query))
        features = F.normalize(tower.token_head(new[:, batch.keys]).float(), dim=-1)
    return features, embedding, batch


def clip_surgery(
    tower: TokenTower,
    inputs: Any,
    targets: Tensor,
    *,
    surgery_blocks: int | None = None,
    feature_surgery: str = "auto",
    redundant: Tensor | None = None,
) -> MethodOutput:
    """CLIP Surgery similarity maps of ``inputs`` against unit-norm ``targets`` ``[T, E]``.

    ``surgery_blocks``: how many of the last blocks get the v–v path (1..depth; default
    ``min(6, depth)``, the authors' 6 for ViT-B). ``feature_surgery``:
    ``"auto"`` | ``"texts"`` | ``"redundant"`` | ``"none"`` (module docstring). ``redundant``: the
    redundant text's unit embedding ``[E]`` or ``[1, E]``.

    Returns maps ``[B, T, *grid]`` float32 and the model's cosine scores ``[B, T]`` (the class
    token comes from the untouched path: ``scores`` = ``model_scores``).
    """
    depth = len(tower.blocks)
    surgery_blocks = min(SURGERY_BLOCKS, depth) if surgery_blocks is None else check_int("surgery_blocks", surgery_blocks, 1, depth)
    if feature_surgery not in FEATURE_SURGERY:
        raise InputError(f"feature_surgery={feature_surgery!r} is not one of {', '.join(map(repr, FEATURE_SURGERY))}")
    n_texts = targets.shape[0]
    mode = feature_surgery if feature_surgery != "auto" else ("texts" if n_texts >= 2 else "redundant")
    if mode == "texts" and n_texts < 2:
        raise InputError("feature_surgery='texts' removes what the texts share and needs at least 2 texts; use 'redundant' for one")
    if mode == "redundant":
        if redundant is None:
            raise InputError(
                "CLIP Surgery with one text subtracts a redundant text feature (the authors: the empty prompt ''); "
                "give the Explainer a tokenizer, pass redundant=<text or unit embedding [E]>, or use feature_surgery='none'"
            )
        redundant = redundant.reshape(-1).to(targets)
        if redundant.shape[0] != targets.shape[1]:
            raise InputError(f"redundant has width {redundant.shape[0]}, the text embeddings have {targets.shape[1]}")
    features, embedding, batch = surgery_features(tower, inputs, surgery_blocks)
    cos = features @ targets.T  # [B, N, T]
    if mode == "texts":
        prob = (2 * cos).softmax(dim=-1)
        weighted = cos * prob / prob.mean(dim=-1, keepdim=True)
        similarity = weighted - weighted.mean(dim=-1, keepdim=True)
    elif mode == "redundant":
        similarity = features @ (targets - redundant).T
    else:
        similarity = cos
    maps = similarity.transpose(1, 2)  # [B, T, N]
    if batch.key_mask is not None:
        maps = maps * batch.key_mask[:, None]
    scores = cosine_scores(embedding, targets)
    return MethodOutput(maps=maps.reshape(*maps.shape[:2], *batch.grid).contiguous(), scores=scores, model_scores=scores)
