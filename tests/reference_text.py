"""A straightforward reference for SPEC §3 (textual Grad-ECLIP), for parity tests and the benchmark.

One (image, text) pair at a time, full autograd, full attention matrices over the whole context,
directly on open_clip's modules — sharing no code with gradeclip.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def text_modules(model):
    """The text tower's pieces: open_clip ``CLIP`` keeps them on the model, ``CustomTextCLIP`` at ``.text``."""
    text = getattr(model, "text", model)
    pool = getattr(text, "pool_type", None) or getattr(model, "text_pool_type", "argmax")
    eos = getattr(text, "eos_id", None) if hasattr(model, "text") else getattr(model, "text_eos_id", None)
    return text, pool, eos


def reference_text_importance(model, tokens, image_emb, *, heads="single", n_layers=8):
    """SPEC §3 for one text (token ids ``[L]``) and one unit image embedding ``[E]``.

    Returns ``(importance [L], explained score, model score)``.
    """
    text, pool, eos = text_modules(model)
    length = tokens.shape[0]
    x = text.token_embedding(tokens[None]) + text.positional_embedding[:length]
    mask = text.attn_mask[:length, :length]
    eot = int(tokens.argmax()) if pool == "argmax" else int((tokens == eos).nonzero()[0, 0])
    blocks = list(text.transformer.resblocks)
    for blk in blocks[: len(blocks) - n_layers]:
        x = blk(x, attn_mask=mask)
    kept = []
    for blk in blocks[len(blocks) - n_layers :]:
        width = x.shape[-1]
        h = blk.ln_1(x)
        w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        q = h @ w[:width].T + b[:width]
        k = h @ w[width : 2 * width].T + b[width : 2 * width]
        v = h @ w[2 * width :].T + b[2 * width :]
        n_heads = 1 if heads == "single" else blk.attn.num_heads
        d = width // n_heads
        qh = q.reshape(length, n_heads, d).transpose(0, 1)
        kh = k.reshape(length, n_heads, d).transpose(0, 1)
        vh = v.reshape(length, n_heads, d).transpose(0, 1)
        attn = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d) + mask, dim=-1)  # [H, L, L]
        o = (attn @ vh).transpose(0, 1).reshape(1, length, width)
        y = x + blk.ls_1(blk.attn.out_proj(o))
        x = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        kept.append((n_heads, q[0], k[0], v[0], o))
    pooled = text.ln_final(x[0, eot])
    proj = text.text_projection
    e = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
    score = F.cosine_similarity(e, image_emb, dim=0)
    grads = torch.autograd.grad(score, [entry[-1] for entry in kept])
    total = torch.zeros(length)
    for (n_heads, q, k, v, _), grad in zip(kept, grads):
        g = grad[0, eot]
        d = g.shape[0] // n_heads
        layer = torch.zeros(eot + 1)
        for hd in range(n_heads):
            sl = slice(hd * d, (hd + 1) * d)
            c = F.cosine_similarity(q[eot, sl].unsqueeze(0), k[: eot + 1, sl], dim=1)  # keys 0..EOT
            lam = (c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else torch.ones_like(c)
            layer = layer + lam * (v[: eot + 1, sl] @ g[sl])
        total[: eot + 1] += torch.relu(layer)
    importance = torch.zeros(length)
    importance[1:eot] = total[1:eot]
    if importance.sum() > 0:
        importance = importance / importance.sum()
    with torch.no_grad():
        model_score = F.cosine_similarity(model.encode_text(tokens[None])[0], image_emb, dim=0)
    return importance.detach(), score.detach(), model_score
