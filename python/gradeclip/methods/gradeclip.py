"""Grad-ECLIP (SPEC §2): channel weights × loosened spatial weights × values, for any token tower.

The same code explains an image tower against text embeddings and (with a text tower) a text
against image embeddings: the tower supplies the tokens, the blocks and the head; the targets are
the other modality's normalised embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..attention import attend
from ..errors import InputError
from ..kernels import compute_maps
from ..kernels.maps_torch import head_contributions, spatial_weights
from ..towers.base import TokenBatch, TokenTower, rows
from ..towers.blocks import BlockAdapter
from .base import MethodInfo, MethodOutput

HEADS = ("single", "model")
SPATIAL = ("loosened", "softmax", "none")
QK_SPACES = ("attention", "out_proj")


@dataclass
class ExplainedLayer:
    """One explained block's state for a batch (SPEC §2 step 1).

    ``o`` is the attention output inside the autograd graph: the query row ``[B, D]`` for the last
    block, the full ``[B, L, D]`` for earlier ones (their other rows feed later blocks).
    ``q`` ``[B, D]`` (query row), ``k``/``v`` ``[B, L, D]`` and ``probs`` ``[B, H, L]`` (the query row's
    attention probabilities, float32) are detached.
    """

    block: BlockAdapter
    heads: int
    o: Tensor
    q: Tensor
    k: Tensor
    v: Tensor
    probs: Tensor


@dataclass
class ExplainedForward:
    """The explained forward of a batch: ``embedding`` ``[B, E]`` (in the graph of every layer's ``o``),
    ``model_embedding`` ``[B, E]`` (the unmodified model's, detached) and the explained layers, first to last."""

    embedding: Tensor
    model_embedding: Tensor
    layers: list[ExplainedLayer]


def check_options(heads: str, spatial: str, qk_space: str, n_layers: int, depth: int) -> None:
    """Raise :class:`InputError` for an option value outside SPEC §2."""
    for name, value, allowed in (("heads", heads, HEADS), ("spatial", spatial, SPATIAL), ("qk_space", qk_space, QK_SPACES)):
        if value not in allowed:
            raise InputError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= depth:
        raise InputError(f"n_layers must be an integer in 1..{depth} (the tower's depth), got {n_layers!r}")


def _query_row_attention(
    block: BlockAdapter, x: Tensor, batch: TokenBatch, heads: int
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The block's attention at the query row only (never the full ``[L, L]`` matrix).

    Returns ``(o_row [B, D], q_row [B, D], k [B, L, D], v [B, L, D], probs [B, H, L])``.
    """
    q, k, v = block.qkv(x)
    q_row = rows(q, batch.query)
    mask = None if batch.attn_mask is None else batch.attn_mask[batch.query].unsqueeze(1)
    o, probs = attend(q_row.unsqueeze(1), k, v, heads, mask)
    return o[:, 0], q_row, k, v, probs[:, :, 0]


def explained_forward(tower: TokenTower, batch: TokenBatch, n_layers: int, heads: str) -> ExplainedForward:
    """Run ``tower`` on ``batch`` with its last ``n_layers`` blocks explained (SPEC §2 steps 1 and 5).

    Earlier blocks run as the model's own, without autograd. With ``heads="single"`` the explained
    blocks use one head spanning all channels. Only the last block's query row is computed; when
    ``n_layers`` > 1 the earlier explained blocks run in full, inside an autograd graph.
    """
    explained = tower.blocks[-n_layers:]
    with torch.no_grad():
        x_start = tower.run_blocks(batch.x, tower.blocks[: len(tower.blocks) - n_layers], batch.attn_mask)
    track = n_layers > 1  # gradients must flow back through the explained blocks' attention
    layers: list[ExplainedLayer] = []
    x = x_start.detach().requires_grad_(track)
    for block in explained:
        n_heads = 1 if heads == "single" else block.heads
        last = block is explained[-1]
        with torch.set_grad_enabled(track):
            if last:
                o, q_row, k, v, probs = _query_row_attention(block, x, batch, n_heads)
            else:
                q, k, v = block.qkv(x)
                o, all_probs = attend(q, k, v, n_heads, batch.attn_mask)
                q_row, probs = rows(q, batch.query), all_probs[torch.arange(x.shape[0]), :, batch.query]
        if not o.requires_grad:
            o = o.detach().requires_grad_()
        layers.append(ExplainedLayer(block, n_heads, o, q_row.detach(), k.detach(), v.detach(), probs.detach()))
        with torch.enable_grad():
            if last:
                embedding = tower.head(block.finish(rows(x, batch.query), o))
            else:
                x = block.finish(x, o)

    if heads == "model":
        model_embedding = embedding.detach()
    else:
        with torch.no_grad():
            x = tower.run_blocks(x_start, explained[:-1], batch.attn_mask)
            o, *_ = _query_row_attention(explained[-1], x, batch, explained[-1].heads)
            model_embedding = tower.head(explained[-1].finish(rows(x, batch.query), o))
    return ExplainedForward(embedding, model_embedding, layers)


def cosine_scores(embedding: Tensor, targets: Tensor) -> Tensor:
    """``cos(e_b, t_t)`` as float32 ``[B, T]``; ``targets`` ``[T, E]`` must be unit-norm."""
    e = embedding.float()
    return (e / e.norm(dim=-1, keepdim=True)) @ targets.T


def channel_weights(embedding: Tensor, targets: Tensor, outputs: list[Tensor]) -> tuple[Tensor, list[Tensor]]:
    """Scores and their gradients with respect to each of ``outputs`` (SPEC §2 step 2).

    ``embedding`` ``[B, E]`` (in the graph of every output), ``targets`` ``[T, E]`` unit-norm float32.
    Returns ``(scores [B, T] float32, grads)`` with ``grads[j]`` ``[B, T, *outputs[j].shape[1:]]``
    float32. With T ≤ E, T vector-Jacobian products batched in one backward call; with T > E, the
    Jacobian of the embedding (E products) contracted with ``∂s/∂e`` — whichever is fewer.
    """
    batch, width = embedding.shape
    n_targets = targets.shape[0]
    with torch.enable_grad():  # callers may be under torch.no_grad()
        e = embedding.float()
        norm = e.norm(dim=-1, keepdim=True)
        scores = (e / norm) @ targets.T
        if n_targets <= width:
            eye = torch.eye(n_targets, device=e.device, dtype=e.dtype)
            cotangents = eye.unsqueeze(1).expand(n_targets, batch, n_targets)  # [T, B, T] one-hot per t
            grads = torch.autograd.grad(scores, outputs, grad_outputs=cotangents, is_grads_batched=True)
            return scores.detach(), [g.float().movedim(0, 1) for g in grads]
        eye = torch.eye(width, device=e.device, dtype=e.dtype)
        jacobians = torch.autograd.grad(e, outputs, grad_outputs=eye.unsqueeze(1).expand(width, batch, width), is_grads_batched=True)
    scores = scores.detach()
    e_hat = (e / norm).detach()
    ds_de = (targets.unsqueeze(0) - scores.unsqueeze(-1) * e_hat.unsqueeze(1)) / norm.detach().unsqueeze(1)  # [B, T, E]
    return scores, [torch.einsum("bte,eb...->bt...", ds_de, j.float()) for j in jacobians]


INFO = MethodInfo(
    name="gradeclip",
    text_specific=True,
    needs_gradients=True,
    forwards_per_image="1 (one tower forward serves all texts; T vector-Jacobian products of the post-attention row)",
    paper="Zhao et al., Grad-ECLIP: Gradient-based Visual and Textual Explanations for CLIP, ICML 2024",
    summary="channel weights (gradient at the query row's attention output) × loosened spatial weights × values",
)


def grad_eclip(
    tower: TokenTower,
    inputs: Any,
    targets: Tensor,
    *,
    heads: str = "single",
    spatial: str = "loosened",
    qk_space: str = "attention",
    n_layers: int = 1,
    per_head: bool = False,
) -> MethodOutput:
    """Grad-ECLIP maps of ``inputs`` against unit-norm ``targets`` ``[T, E]`` (SPEC §2).

    Returns a :class:`MethodOutput` with ``maps`` ``[B, T, *grid]`` over the tower's map keys and,
    with ``per_head=True``, ``extras["head_maps"]`` ``[B, T, H, *grid]``: the per-head terms
    ``λ^h_i Σ_{c∈h} g_c v_{i,c}`` before the ReLU (``maps == relu(head_maps.sum(2))``).
    """
    check_options(heads, spatial, qk_space, n_layers, len(tower.blocks))
    if per_head and (heads != "model" or n_layers != 1):
        raise InputError("per_head=True needs heads='model' and n_layers=1 (per-head terms of one block)")
    batch = tower.embed(inputs)
    fwd = explained_forward(tower, batch, n_layers, heads)
    scores, grads = channel_weights(fwd.embedding, targets, [layer.o for layer in fwd.layers])
    model_scores = cosine_scores(fwd.model_embedding, targets)
    keys = batch.keys
    maps = None
    head_maps = None
    for layer, g in zip(fwd.layers, grads):
        if g.ndim == 4:  # gradient of a full [B, L, D] output: keep the query row
            g = g[torch.arange(g.shape[0]), :, batch.query]
        q, k = layer.q, layer.k[:, keys]
        if qk_space == "out_proj":
            with torch.no_grad():
                q, k = layer.block.out_proj(q), layer.block.out_proj(k)
        probs = layer.probs[:, :, keys]
        v = layer.v[:, keys]
        if per_head:
            lam = spatial_weights(q, k, spatial, layer.heads, probs, batch.key_mask)
            head_maps = head_contributions(v, g, lam)
            layer_maps = torch.relu(head_maps.sum(dim=2))
        else:
            layer_maps = compute_maps(q, k, v, g, spatial=spatial, heads=layer.heads, probs=probs, key_mask=batch.key_mask)
        maps = layer_maps if maps is None else maps + layer_maps
    assert maps is not None
    grid = (maps.shape[0], maps.shape[1], *batch.grid)
    extras = {} if head_maps is None else {"head_maps": head_maps.reshape(*grid[:2], head_maps.shape[2], *batch.grid)}
    return MethodOutput(maps=maps.reshape(grid), scores=scores, model_scores=model_scores, extras=extras)
