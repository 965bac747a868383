"""Straightforward SPEC §1–§3 references for the non-ViT-B adapters, for parity tests only.

One (input, target) pair at a time, full attention matrices, full autograd, written directly on
each library's modules — sharing no code with gradeclip. Each family gives the explained layer's
q, k, v from the module weights and the function from its attention output to the embedding; the
generic parts below do SPEC §2 steps 1–4 (and §3 for texts) by hand, head by head.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def full_attention(q, k, v, heads, mask=None):
    """``q`` ``[Lq, D]``, ``k``/``v`` ``[L, D]`` → ``(o [Lq, D], probs [H, Lq, L])`` with ``heads`` heads."""
    d = q.shape[-1] // heads
    qh = q.reshape(q.shape[0], heads, d).transpose(0, 1)
    kh = k.reshape(k.shape[0], heads, d).transpose(0, 1)
    vh = v.reshape(v.shape[0], heads, d).transpose(0, 1)
    logits = qh @ kh.transpose(1, 2) / math.sqrt(d)
    if mask is not None:
        logits = logits + mask
    probs = logits.softmax(dim=-1)
    return (probs @ vh).transpose(0, 1).reshape(q.shape[0], -1), probs


def spec_map(q, k, v, g, heads, probs=None, spatial="loosened", valid=None):
    """SPEC §2 steps 3–4 for one query row: ``q`` ``[D]``, ``k``/``v`` ``[N, D]``, ``g`` ``[D]``,
    ``probs`` ``[H, N]``; ``valid`` ``[N]`` bool (keys that count). Returns ``[N]`` (ReLU applied)."""
    d = q.shape[0] // heads
    n = k.shape[0]
    valid = torch.ones(n, dtype=torch.bool) if valid is None else valid
    out = torch.zeros(n)
    for h in range(heads):
        sl = slice(h * d, (h + 1) * d)
        if spatial == "loosened":
            c = F.cosine_similarity(q[sl].unsqueeze(0), k[:, sl], dim=1)
            lo, hi = c[valid].min(), c[valid].max()
            lam = (c - lo) / (hi - lo) if hi > lo else torch.ones(n)
        elif spatial == "softmax":
            lam = probs[h]
        else:
            lam = torch.ones(n)
        out = out + lam * valid * (v[:, sl] @ g[sl])
    return torch.relu(out)


def score_of(e, target, score):
    return F.cosine_similarity(e, target, dim=0) if score == "cosine" else e @ target


def pooler_reference(q, k, v, heads, readout, keys, target, *, spatial="loosened", score="cosine"):
    """A one-attention tower (attention pooler): ``q`` ``[Q, D]`` (the explained queries), ``k``/``v``
    ``[L, D]``; ``readout(o [Q, D]) -> e [E]``; ``keys`` the map positions. Returns ``(map [N], score)``,
    the maps of the Q queries averaged."""
    o, probs = full_attention(q, k, v, heads)
    s = score_of(readout(o), target, score)
    (g,) = torch.autograd.grad(s, o)
    maps = [spec_map(q[j], k[keys], v[keys], g[j], heads, probs[:, j, keys], spatial) for j in range(q.shape[0])]
    return torch.stack(maps).mean(0).detach(), s.detach()


def blocks_reference(
    x, blocks, qkv, rest, head, query, keys, target, *,
    heads="single", n_layers=1, mask=None, valid=None, score="cosine", spatial="loosened",
):
    """A tower of residual self-attention blocks (one sequence ``x`` ``[L, D]``): the last
    ``n_layers`` blocks re-run with full attention (one head with ``heads="single"``), the earlier
    ones with ``block(x)`` given by the caller's ``run`` inside ``blocks`` (callables). ``qkv(block, x)``
    → q, k, v ``[L, D]``; ``rest(block, x, o)`` → the block's output; ``head(z [D])`` → e.
    Returns ``(summed map over keys [N], score)``."""
    run, explained = blocks[: len(blocks) - n_layers], blocks[len(blocks) - n_layers :]
    for block in run:
        x = block.run(x)
    kept = []
    for block in explained:
        q, k, v = qkv(block.module, x)
        n_heads = 1 if heads == "single" else block.heads
        o, probs = full_attention(q, k, v, n_heads, mask)
        x = rest(block.module, x, o)
        kept.append((q, k, v, o, probs, n_heads))
    s = score_of(head(x[query]), target, score)
    grads = torch.autograd.grad(s, [entry[3] for entry in kept])
    total = torch.zeros(len(keys))
    for (q, k, v, _, probs, n_heads), g in zip(kept, grads, strict=True):
        total = total + spec_map(q[query], k[keys], v[keys], g[query], n_heads, probs[:, query, keys], spatial, valid)
    return total.detach(), s.detach()


class Step:
    """A block for :func:`blocks_reference`: the module, its head count, and its own forward on ``[L, D]``."""

    def __init__(self, module, heads, run):
        self.module, self.heads, self.run = module, heads, run


def text_importance(total, reported):
    """SPEC §3 last step: keep ``reported`` positions, normalise to sum 1 (all zero stays zero)."""
    kept = total * reported
    return kept / kept.sum() if kept.sum() > 0 else kept
