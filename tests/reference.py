"""Straightforward references written from SPEC.md, for parity tests only.

They run one (image, text) pair at a time with full autograd and full attention matrices,
directly on open_clip's modules — sharing no code with gradeclip's engine.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def vit_tokens(visual, image):
    """Tokens entering block 0 for one image [1, 3, H, W], with the patch grid (h, w)."""
    x = visual.conv1(image)
    gh, gw = x.shape[-2:]
    x = x.reshape(1, x.shape[1], gh * gw).permute(0, 2, 1)
    x = torch.cat([visual.class_embedding.reshape(1, 1, -1), x], dim=1)
    pos = visual.positional_embedding
    g0h, g0w = visual.grid_size
    if (gh, gw) != (g0h, g0w):
        grid = pos[1:].reshape(1, g0h, g0w, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, -1)])
    return visual.ln_pre(x + pos), (gh, gw)


def reference_visual_map(model, image, text_emb, *, heads="single", spatial="loosened", qk_space="attention", n_layers=1):
    """SPEC §2 for one image [1, 3, H, W] and one unit text embedding [E].

    Returns (map [h, w], explained score, model score) as float64-free plain fp32 tensors.
    """
    visual = model.visual
    x, (gh, gw) = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    for blk in blocks[: len(blocks) - n_layers]:
        x = blk(x)
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
        length = x.shape[1]
        qh = q.reshape(length, n_heads, d).transpose(0, 1)
        kh = k.reshape(length, n_heads, d).transpose(0, 1)
        vh = v.reshape(length, n_heads, d).transpose(0, 1)
        attn = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)  # [H, L, L]
        o = (attn @ vh).transpose(0, 1).reshape(1, length, width)
        y = x + blk.ls_1(blk.attn.out_proj(o))
        x = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        kept.append((blk, n_heads, q[0], k[0], v[0], attn, o))
    e = visual.ln_post(x[:, 0]) @ visual.proj
    score = F.cosine_similarity(e[0], text_emb, dim=0)
    grads = torch.autograd.grad(score, [entry[-1] for entry in kept])
    total = torch.zeros(gh * gw)
    for (blk, n_heads, q, k, v, attn, _), grad in zip(kept, grads):
        g = grad[0, 0]  # the query (class token) row
        qq, kk, vv = q[0], k[1:], v[1:]
        if qk_space == "out_proj":
            qq, kk = blk.attn.out_proj(qq), blk.attn.out_proj(kk)
        d = g.shape[0] // n_heads
        layer = torch.zeros(gh * gw)
        for hd in range(n_heads):
            sl = slice(hd * d, (hd + 1) * d)
            if spatial == "loosened":
                c = F.cosine_similarity(qq[sl].unsqueeze(0), kk[:, sl], dim=1)
                lam = (c - c.min()) / (c.max() - c.min()) if c.max() > c.min() else torch.ones_like(c)
            elif spatial == "softmax":
                lam = attn[hd, 0, 1:]
            else:
                lam = torch.ones(gh * gw)
            layer = layer + lam * (vv[:, sl] @ g[sl])
        total = total + torch.relu(layer)
    with torch.no_grad():  # the unmodified model at this input size (positional embedding interpolated)
        z, _ = vit_tokens(visual, image)
        for blk in blocks:
            z = blk(z)
        model_e = (visual.ln_post(z[:, 0]) @ visual.proj)[0]
    model_score = F.cosine_similarity(model_e, text_emb, dim=0)
    return total.reshape(gh, gw).detach(), score.detach(), model_score.detach()
