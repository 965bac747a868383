"""Grad-ECLIP (SPEC §2): channel weights × loosened spatial weights × values, for any token tower.

The same code explains an image tower against text embeddings, a text against image embeddings,
and a classifier's image against its classes: the tower supplies the tokens, the explained layers
(whose last one gives its query rows' q, k, v) and the readout from the attention output to the
embedding; the targets are the other modality's normalised embeddings or one-hot class rows.
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
from ..towers.base import TextTower, TokenBatch, TokenTower, rows
from ..towers.blocks import AttentionBlock, ExplainedAttention
from .base import MethodInfo, MethodOutput

HEADS = ("single", "model")
SPATIAL = ("loosened", "softmax", "none")
QK_SPACES = ("attention", "out_proj")
LAMBDA_KEYS = ("attended", "context")  # λ's min-max over the keys the query attends to, or over every context position
RELUS = ("per_layer", "after_sum")  # ReLU on each layer's map (SPEC §2 step 5, §3), or once on their sum (§3 (b))


@dataclass
class ExplainedLayer:
    """One explained layer's state for a batch (SPEC §2 step 1).

    ``o`` is the attention output inside the autograd graph: the query rows ``[B, Q, D]`` for the
    last layer, the full ``[B, L, D]`` for earlier blocks (their other rows feed later blocks).
    ``q`` ``[B, Q, D]`` (the query rows; Q = 1 for earlier blocks), ``k``/``v`` ``[B, L, D]`` and
    ``probs`` ``[B, H, Q, L]`` (the query rows' attention probabilities, float32) are detached.
    """

    block: ExplainedAttention
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


def check_options(
    heads: str, spatial: str, qk_space: str, n_layers: int, depth: int, lambda_keys: str = "attended", relu: str = "per_layer"
) -> None:
    """Raise :class:`InputError` for an option value outside SPEC §2, §3 and §12."""
    choices = (
        ("heads", heads, HEADS),
        ("spatial", spatial, SPATIAL),
        ("qk_space", qk_space, QK_SPACES),
        ("lambda_keys", lambda_keys, LAMBDA_KEYS),
        ("relu", relu, RELUS),
    )
    for name, value, allowed in choices:
        if value not in allowed:
            raise InputError(f"{name}={value!r} is not one of {', '.join(map(repr, allowed))}")
    if isinstance(n_layers, bool) or not isinstance(n_layers, int) or not 1 <= n_layers <= depth:
        raise InputError(f"n_layers must be an integer in 1..{depth} (the tower's explainable layers), got {n_layers!r}")


def _query_attention(block: ExplainedAttention, x: Tensor, batch: TokenBatch, heads: int) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """The layer's attention at its query rows only (never the full ``[L, L]`` matrix).

    Returns ``(o [B, Q, D], q [B, Q, D], k [B, L, D], v [B, L, D], probs [B, H, Q, L])``.
    """
    q, k, v, mask = block.query_qkv(x, batch.query, batch.attn_mask)
    o, probs = attend(q, k, v, heads, mask)
    return o, q, k, v, probs


def explained_forward(tower: TokenTower, batch: TokenBatch, n_layers: int, heads: str) -> ExplainedForward:
    """Run ``tower`` on ``batch`` with its last ``n_layers`` layers explained (SPEC §2 steps 1 and 5).

    Earlier blocks run as the model's own, without autograd. With ``heads="single"`` the explained
    layers use one head spanning all channels. Only the last layer's query rows are computed; when
    ``n_layers`` > 1 the earlier explained blocks run in full, inside an autograd graph.
    """
    explained = tower.blocks[-n_layers:]
    if n_layers > 1 and batch.query is None:
        raise InputError(f"{tower.description}: n_layers > 1 needs a query position in the earlier blocks; this tower has none")
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
                o, q_rows, k, v, probs = _query_attention(block, x, batch, n_heads)
            else:
                assert isinstance(block, AttentionBlock) and batch.query is not None
                q, k, v = block.qkv(x)
                o, all_probs = attend(q, k, v, n_heads, batch.attn_mask)
                q_rows = rows(q, batch.query).unsqueeze(1)
                probs = all_probs[torch.arange(x.shape[0]), :, batch.query].unsqueeze(2)
        if not o.requires_grad:
            o = o.detach().requires_grad_()
        layers.append(ExplainedLayer(block, n_heads, o, q_rows.detach(), k.detach(), v.detach(), probs.detach()))
        with torch.enable_grad():
            if last:
                embedding = tower.readout(x, o, batch)
            else:
                x = block.finish(x, o)

    if heads == "model":
        model_embedding = embedding.detach()
    else:
        with torch.no_grad():
            x = tower.run_blocks(x_start, explained[:-1], batch.attn_mask)
            o, *_ = _query_attention(explained[-1], x, batch, explained[-1].heads)
            model_embedding = tower.readout(x, o, batch)
    return ExplainedForward(embedding, model_embedding, layers)


def target_scores(embedding: Tensor, targets: Tensor, score: str = "cosine") -> Tensor:
    """The explained score as float32 ``[B, T]``: ``cos(e_b, t_t)`` (``targets`` unit-norm) for
    ``score="cosine"``, ``e_b · t_t`` (one-hot class rows give the class logit) for ``"logit"``.

    ``targets`` is ``[T, E]`` (the same T targets for every image) or ``[B, T, E]`` (each image its
    own T targets, e.g. the phrases of its own caption when fine-tuning, SPEC §10).
    """
    e = embedding.float()
    if score == "cosine":
        e = e / e.norm(dim=-1, keepdim=True)
    if targets.ndim == 3:
        return torch.einsum("be,bte->bt", e, targets)
    return e @ targets.T


def cosine_scores(embedding: Tensor, targets: Tensor) -> Tensor:
    """``cos(e_b, t_t)`` as float32 ``[B, T]``; ``targets`` ``[T, E]`` must be unit-norm."""
    return target_scores(embedding, targets, "cosine")


def channel_weights(
    embedding: Tensor, targets: Tensor, outputs: list[Tensor], score: str = "cosine"
) -> tuple[Tensor, list[Tensor]]:
    """Scores and their gradients with respect to each of ``outputs`` (SPEC §2 step 2).

    ``embedding`` ``[B, E]`` (in the graph of every output), ``targets`` ``[T, E]`` or per image
    ``[B, T, E]`` float32 (unit-norm for ``score="cosine"``, see :func:`target_scores`). Returns ``(scores [B, T] float32, grads)``
    with ``grads[j]`` ``[B, T, *outputs[j].shape[1:]]`` float32. With T ≤ E, T vector-Jacobian
    products batched in one backward call; with T > E, the Jacobian of the embedding (E products)
    contracted with ``∂s/∂e`` — whichever is fewer.
    """
    batch, width = embedding.shape
    n_targets = targets.shape[-2]
    with torch.enable_grad():  # callers may be under torch.no_grad()
        e = embedding.float()
        scores = target_scores(e, targets, score)
        if n_targets <= width:
            eye = torch.eye(n_targets, device=e.device, dtype=e.dtype)
            cotangents = eye.unsqueeze(1).expand(n_targets, batch, n_targets)  # [T, B, T] one-hot per t
            grads = torch.autograd.grad(scores, outputs, grad_outputs=cotangents, is_grads_batched=True)
            return scores.detach(), [g.float().movedim(0, 1) for g in grads]
        eye = torch.eye(width, device=e.device, dtype=e.dtype)
        jacobians = torch.autograd.grad(e, outputs, grad_outputs=eye.unsqueeze(1).expand(width, batch, width), is_grads_batched=True)
    scores = scores.detach()
    per_image = targets if targets.ndim == 3 else targets.unsqueeze(0)  # [B or 1, T, E]
    if score == "cosine":
        norm = e.detach().norm(dim=-1, keepdim=True)
        e_hat = e.detach() / norm
        ds_de = (per_image - scores.unsqueeze(-1) * e_hat.unsqueeze(1)) / norm.unsqueeze(1)  # [B, T, E]
    else:
        ds_de = per_image.expand(batch, n_targets, width)
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
    lambda_keys: str = "attended",
    relu: str = "per_layer",
) -> MethodOutput:
    """Grad-ECLIP maps of ``inputs`` against ``targets`` ``[T, E]`` (SPEC §2): unit-norm embeddings of
    the other modality, or one-hot class rows for a classifier tower (``tower.score == "logit"``);
    ``[B, T, E]`` gives each image its own T targets.

    When the explained attention has several query rows (a pooler with several learned queries
    feeding the embedding), each query gets its own map (its own ``g``, ``λ``) and the maps are
    averaged (SPEC §1).

    The authors' released textual form (SPEC §3 (a), (b); §12) is two options:
    ``lambda_keys="context"`` runs a text tower over every position of the ids and min-max
    normalises λ over all of them (padding after EOT included) instead of the keys the query
    attends to, and ``relu="after_sum"`` applies the ReLU once to the sum of the layers' terms
    instead of to each layer's map.

    Returns a :class:`MethodOutput` with ``maps`` ``[B, T, *grid]`` over the tower's map keys and,
    with ``per_head=True``, ``extras["head_maps"]`` ``[B, T, H, *grid]``: the per-head terms
    ``λ^h_i Σ_{c∈h} g_c v_{i,c}`` before the ReLU (``maps == relu(head_maps.sum(2))``).
    """
    check_options(heads, spatial, qk_space, n_layers, len(tower.blocks), lambda_keys, relu)
    if per_head and (heads != "model" or n_layers != 1):
        raise InputError("per_head=True needs heads='model' and n_layers=1 (per-head terms of one block)")
    if lambda_keys == "context" and not isinstance(tower, TextTower):
        raise InputError(f"lambda_keys='context' is for text towers (their padding positions); {tower.description} is not one")
    with torch.no_grad():  # the run-up to the explained layers needs no graph
        batch = tower.embed(inputs, whole_context=True) if isinstance(tower, TextTower) and lambda_keys == "context" else tower.embed(inputs)
    fwd = explained_forward(tower, batch, n_layers, heads)
    if per_head and fwd.layers[-1].q.shape[1] > 1:
        raise InputError(f"{tower.description}: per_head=True needs one query; this tower's pooler has several")
    scores, grads = channel_weights(fwd.embedding, targets, [layer.o for layer in fwd.layers], tower.score)
    model_scores = target_scores(fwd.model_embedding, targets, tower.score)
    keys = batch.keys
    key_mask = None if lambda_keys == "context" else batch.key_mask
    maps = None
    head_maps = None
    for layer, g in zip(fwd.layers, grads, strict=True):
        if layer is not fwd.layers[-1]:  # gradient of a full [B, L, D] output: keep the query row
            assert batch.query is not None
            g = g[torch.arange(g.shape[0]), :, batch.query].unsqueeze(2)
        q, k = layer.q, layer.k[:, keys]
        if qk_space == "out_proj":
            with torch.no_grad():
                q, k = layer.block.out_proj(q), layer.block.out_proj(k)
        count = q.shape[1]  # Q query rows: one map per query, averaged (SPEC §1)
        q, probs = q.flatten(0, 1), layer.probs[..., keys].transpose(1, 2).flatten(0, 1)  # [B·Q, D], [B·Q, H, N]
        k, v = _repeat(k, count), _repeat(layer.v[:, keys], count)  # [B·Q, N, D]
        g = g.transpose(1, 2).flatten(0, 1)  # [B·Q, T, D]
        mask = None if key_mask is None else _repeat(key_mask, count)
        if per_head or relu == "after_sum":
            lam = spatial_weights(q, k, spatial, layer.heads, probs, mask)
            terms = head_contributions(v, g, lam)  # [B·Q, T, H, N]
            head_maps = terms if per_head else None
            layer_maps = terms.sum(dim=2)  # before the ReLU
            if relu == "per_layer":
                layer_maps = torch.relu(layer_maps)
        else:
            layer_maps = compute_maps(q, k, v, g, spatial=spatial, heads=layer.heads, probs=probs, key_mask=mask)
        layer_maps = layer_maps.unflatten(0, (-1, count)).mean(dim=1)  # [B, T, N]
        maps = layer_maps if maps is None else maps + layer_maps
    assert maps is not None
    if relu == "after_sum":
        maps = torch.relu(maps)
    grid = (maps.shape[0], maps.shape[1], *batch.grid)
    extras = {} if head_maps is None else {"head_maps": head_maps.reshape(*grid[:2], head_maps.shape[2], *batch.grid)}
    return MethodOutput(maps=maps.reshape(grid), scores=scores, model_scores=model_scores, extras=extras)


def _repeat(x: Tensor, count: int) -> Tensor:
    """``[B, ...]`` → ``[B·count, ...]``, each row repeated ``count`` times in a row (a view when count = 1)."""
    return x if count == 1 else x.repeat_interleave(count, dim=0)
