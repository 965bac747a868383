"""Pieces the baseline methods share: the model's own forward at the query row, per-text gradients,
text-agnostic maps, option checks."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from ..errors import InputError
from ..towers.base import TokenBatch, TokenTower
from ..attention import attend
from .gradeclip import cosine_scores

__all__ = [
    "check_float",
    "check_int",
    "check_layer_index",
    "cosine_scores",
    "keys_of",
    "last_block_embedding",
    "text_gradients",
    "same_for_every_text",
]


def last_block_embedding(tower: TokenTower, batch: TokenBatch, x: Tensor) -> tuple[Tensor, Tensor]:
    """The model's own last block at the query row only (never the full attention), then the head.

    ``x`` ``[B, L, D]`` enters the last block. Returns ``(embedding [B, E], probs [B, H, 1, L])``:
    the unnormalised embedding and the query row's attention probabilities over every position
    (float32). Under autograd both lie in the graph, ``probs`` on the path to ``embedding``.
    """
    last = tower.blocks[-1]
    q, k, v, mask = last.query_qkv(x, batch.query, batch.attn_mask)
    o, probs = attend(q, k, v, last.heads, mask)
    return tower.readout(x, o, batch), probs


def keys_of(values: Tensor, batch: TokenBatch) -> Tensor:
    """The map's key positions of ``values`` ``[B, ..., L]`` (last axis = positions) → ``[B, ..., N]``,
    zero at keys that do not count for a row (``batch.key_mask``)."""
    out = values[..., batch.keys]
    if batch.key_mask is not None:
        mask = batch.key_mask.reshape(batch.key_mask.shape[0], *([1] * (out.ndim - 2)), -1)
        out = out * mask
    return out


def same_for_every_text(maps: Tensor, n_texts: int, grid: tuple[int, ...]) -> Tensor:
    """A text-agnostic map ``[B, N]`` repeated for each of ``n_texts`` texts → ``[B, T, *grid]`` float32."""
    b = maps.shape[0]
    return maps.float().reshape(b, 1, *grid).expand(b, n_texts, *grid).contiguous()


def text_gradients(scores: Tensor, outputs: list[Tensor], elements_per_chunk: int = 2**26) -> Iterator[tuple[slice, list[Tensor]]]:
    """Gradients of each text's scores with respect to ``outputs``, a chunk of texts at a time.

    ``scores`` ``[B, T]`` is in the graph of every tensor of ``outputs`` (each ``[B, ...]``; the B
    rows are independent, so one backward gives every image's gradient). Yields
    ``(texts, grads)`` with ``grads[j]`` ``[B, t, *outputs[j].shape[1:]]`` float32 for the texts of the
    slice ``texts``; chunks hold at most about ``elements_per_chunk`` gradient elements.
    """
    batch, n_texts = scores.shape
    per_text = sum(o.numel() for o in outputs)
    chunk = max(1, min(n_texts, elements_per_chunk // max(1, per_text)))
    for start in range(0, n_texts, chunk):
        stop = min(n_texts, start + chunk)
        cotangents = torch.zeros(stop - start, batch, n_texts, device=scores.device, dtype=scores.dtype)
        cotangents[torch.arange(stop - start), :, torch.arange(start, stop)] = 1.0
        grads = torch.autograd.grad(scores, outputs, grad_outputs=cotangents, is_grads_batched=True, retain_graph=stop < n_texts)
        yield slice(start, stop), [g.float().movedim(0, 1) for g in grads]


def check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    """``value`` as an int in ``low..high`` (inclusive; no upper bound when ``high`` is None), else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
        bound = f"{low}..{high}" if high is not None else f"≥ {low}"
        raise InputError(f"{name} must be an integer {bound}, got {value!r}")
    return value


def check_layer_index(name: str, value: object, depth: int) -> int:
    """A block index in ``-depth..depth-1`` (negative counts from the last block) → ``0..depth-1``."""
    if isinstance(value, bool) or not isinstance(value, int) or not -depth <= value < depth:
        raise InputError(f"{name} must be a block index in {-depth}..{depth - 1} (the tower has {depth} blocks), got {value!r}")
    return value % depth


def check_float(name: str, value: object, *, positive: bool = True, below_one: bool = False) -> float:
    """``value`` as a finite float (> 0 when ``positive``, < 1 when ``below_one``), else :class:`InputError`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or value in (float("inf"), float("-inf")):
        raise InputError(f"{name} must be a finite number, got {value!r}")
    if (positive and value <= 0) or (below_one and value >= 1):
        raise InputError(f"{name} must be in {'(0, 1)' if below_one else '(0, ∞)'}, got {value!r}")
    return float(value)
