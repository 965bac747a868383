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


def causal_run_up(model, tokens, n_layers):
    """A causal text tower run on ids ``[L]`` up to its last ``n_layers`` blocks, with the model's
    own blocks. Returns ``(text modules, x [1, L, D], causal mask [L, L], EOT position, the explained blocks)``."""
    text, pool, eos = text_modules(model)
    length = tokens.shape[0]
    x = text.token_embedding(tokens[None]) + text.positional_embedding[:length]
    mask = text.attn_mask[:length, :length]
    eot = int(tokens.argmax()) if pool == "argmax" else int((tokens == eos).nonzero()[0, 0])
    blocks = list(text.transformer.resblocks)
    for blk in blocks[: len(blocks) - n_layers]:
        x = blk(x, attn_mask=mask)
    return text, x, mask, eot, blocks[len(blocks) - n_layers :]


def reference_text_importance(model, tokens, image_emb, *, heads="single", n_layers=8):
    """SPEC §3 for one text (token ids ``[L]``) and one unit image embedding ``[E]``.

    Returns ``(importance [L], explained score, model score)``.
    """
    text, x, mask, eot, explained = causal_run_up(model, tokens, n_layers)
    length = tokens.shape[0]
    kept = []
    for blk in explained:
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


def reference_pooled_text_importance(model, tokens, image_emb, *, heads="single", n_layers=8):
    """SPEC §3 for one text (token ids ``[L]``) and one unit image embedding ``[E]``, for the text
    towers whose attention is not just the causal mask: CoCa's (an appended class token, pooled,
    under the causal mask plus a padding mask) and bidirectional towers pooled at EOT (MobileCLIP,
    with or without ``use_pad_mask``).

    The tokens and the attention mask are the model's own (``TextTransformer._embeds``; for a
    ``CLIP`` without a causal mask, its embeddings and no mask). The query is the class token when
    there is one, else EOT; λ's min-max runs over the positions the query's row of the mask leaves
    visible; importance is reported strictly between SOT and EOT. Returns
    ``(importance [L], explained score, model score)``.
    """
    text, pool, eos = text_modules(model)
    length = tokens.shape[0]
    if hasattr(text, "_embeds"):
        x, mask = text._embeds(tokens[None])  # mask: None, [L', L'] or [heads, L', L'] (one row: B = 1)
    else:
        x = text.token_embedding(tokens[None]) + text.positional_embedding[:length]
        mask = None if text.attn_mask is None else text.attn_mask[:length, :length]
    blocks = list(text.transformer.resblocks)
    model_heads = blocks[0].attn.num_heads
    seq = x.shape[1]
    per_head = torch.zeros(model_heads, seq, seq) if mask is None else mask.expand(model_heads, seq, seq)
    assert all(torch.equal(per_head[0], m) for m in per_head)  # the same mask for every head
    cls = getattr(text, "cls_emb", None) is not None
    eot = int(tokens.argmax()) if pool != "eos" else int((tokens == eos).nonzero()[0, 0])
    query = seq - 1 if cls else eot
    visible = torch.isfinite(per_head[0, query])
    for blk in blocks[: len(blocks) - n_layers]:
        x = blk(x, attn_mask=mask)  # the model's own block, with the mask as the model passes it
    kept = []
    for blk in blocks[len(blocks) - n_layers :]:
        width = x.shape[-1]
        h = blk.ln_1(x)
        w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        q = h @ w[:width].T + b[:width]
        k = h @ w[width : 2 * width].T + b[width : 2 * width]
        v = h @ w[2 * width :].T + b[2 * width :]
        n_heads = 1 if heads == "single" else model_heads
        d = width // n_heads
        qh = q.reshape(seq, n_heads, d).transpose(0, 1)
        kh = k.reshape(seq, n_heads, d).transpose(0, 1)
        vh = v.reshape(seq, n_heads, d).transpose(0, 1)
        attn = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d) + per_head[:n_heads], dim=-1)  # [H, L', L']
        o = (attn @ vh).transpose(0, 1).reshape(1, seq, width)
        y = x + blk.ls_1(blk.attn.out_proj(o))
        x = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        kept.append((n_heads, q[0], k[0], v[0], o))
    pooled = text.ln_final(x[0, query])
    proj = text.text_projection
    e = pooled if proj is None else proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
    score = F.cosine_similarity(e, image_emb, dim=0)
    grads = torch.autograd.grad(score, [entry[-1] for entry in kept])
    total = torch.zeros(seq)
    for (n_heads, q, k, v, _), grad in zip(kept, grads):
        g = grad[0, query]
        d = g.shape[0] // n_heads
        layer = torch.zeros(seq)
        for hd in range(n_heads):
            sl = slice(hd * d, (hd + 1) * d)
            c = F.cosine_similarity(q[query, sl].unsqueeze(0), k[:, sl], dim=1)
            lo, hi = c[visible].min(), c[visible].max()
            lam = (c - lo) / (hi - lo) if hi > lo else torch.ones_like(c)
            layer = layer + lam * visible * (v[:, sl] @ g[sl])
        total += torch.relu(layer)
    importance = torch.zeros(length)
    importance[1:eot] = total[1:eot]
    if importance.sum() > 0:
        importance = importance / importance.sum()
    with torch.no_grad():
        model_score = F.cosine_similarity(model.encode_text(tokens[None])[0], image_emb, dim=0)
    return importance.detach(), score.detach(), model_score


def reference_authors_text_importance(model, tokens, image_emb, *, n_layers=8, lambda_keys="context", relu="after_sum", qk_space="attention"):
    """The authors' released textual form (``grad_eclip_text.ipynb``; SPEC §3 (a), (b), §12), for
    one text (token ids ``[L]``, the whole context) and one unit image embedding ``[E]``, single head,
    written the way their notebook computes it: every one of the L positions runs through the
    blocks, ``λ`` is min-max normalised over all L positions (``lambda_keys="context"``; or over
    0..EOT with ``"attended"``) and the ReLU is applied once to the sum of the layers' terms
    (``relu="after_sum"``; or per layer with ``"per_layer"``). ``qk_space="out_proj"`` passes q and
    k through the output projection first (their ``generate_emap.py``). Returns
    ``(importance [L], explained score)``.
    """
    text, x, mask, eot, explained = causal_run_up(model, tokens, n_layers)
    length = tokens.shape[0]
    kept = []
    for blk in explained:
        width = x.shape[-1]
        h = blk.ln_1(x)[0]
        w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
        q, k, v = (h @ w.T + b).chunk(3, dim=-1)  # [L, D] each
        attn = torch.softmax(q @ k.T / math.sqrt(width) + mask, dim=-1)
        o = (attn @ v).unsqueeze(0)
        y = x + blk.ls_1(blk.attn.out_proj(o))
        x = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        if qk_space == "out_proj":
            q, k = blk.attn.out_proj(q), blk.attn.out_proj(k)
        kept.append((q.detach(), k.detach(), v.detach(), o))
    pooled = text.ln_final(x[0, eot])
    proj = text.text_projection
    e = proj(pooled) if isinstance(proj, torch.nn.Linear) else pooled @ proj
    score = F.cosine_similarity(e, image_emb, dim=0)
    grads = torch.autograd.grad(score, [entry[-1] for entry in kept])
    terms = []
    for (q, k, v, _), grad in zip(kept, grads):
        g = grad[0, eot]
        keys = length if lambda_keys == "context" else eot + 1
        cos = F.normalize(k[:keys], dim=-1) @ F.normalize(q[eot], dim=-1)
        lam = (cos - cos.min()) / (cos.max() - cos.min())
        term = torch.zeros(length)
        term[:keys] = lam * (v[:keys] @ g)
        terms.append(term)
    stacked = torch.stack(terms)
    emap = torch.relu(stacked.sum(0)) if relu == "after_sum" else torch.relu(stacked).sum(0)
    importance = torch.zeros(length)
    total = emap[1:eot].sum()
    importance[1:eot] = emap[1:eot] / total if total > 0 else 0.0  # theirs divides 0 by 0 here; SPEC §3 keeps zeros
    return importance.detach(), score.detach()
