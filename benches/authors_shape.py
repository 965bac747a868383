"""The authors' pipeline shape, written from SPEC §2, as the baseline for bench_explain.py.

One image at a time, as the authors' evaluation script (``generate_emap.py``) is organised: the
whole image tower runs with autograd recording (the model's parameters require gradients), the
explained (last) block re-run in single-head form over all tokens, ``ln_post`` and the projection
applied to every token; then one ``autograd.grad`` call per text (``retain_graph=True``) gives that
pair's channel weights; maps from loosened λ with q and k passed through the output projection.
The script's extra MaskCLIP features (``v_final``) are left out: Grad-ECLIP does not need them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def explain_one_image(model, image, text_embs):
    """Maps ``[T, h, w]`` for one image ``[1, 3, H, W]`` and unit text embeddings ``[T, E]``."""
    visual = model.visual
    x = visual.conv1(image)
    gh, gw = x.shape[-2:]
    x = x.flatten(2).transpose(1, 2)
    x = torch.cat([visual.class_embedding.view(1, 1, -1).to(x.dtype), x], dim=1) + visual.positional_embedding
    x = visual.ln_pre(x)
    blocks = visual.transformer.resblocks
    with torch.enable_grad():
        for blk in blocks[:-1]:
            x = blk(x)
        blk = blocks[-1]
        width = x.shape[-1]
        h = blk.ln_1(x)
        q, k, v = F.linear(h, blk.attn.in_proj_weight, blk.attn.in_proj_bias).chunk(3, dim=-1)
        attn = torch.softmax(q @ k.transpose(1, 2) / math.sqrt(width), dim=-1)
        o = attn @ v
        y = x + blk.ls_1(blk.attn.out_proj(o))
        z = y + blk.ls_2(blk.mlp(blk.ln_2(y)))
        e = (visual.ln_post(z) @ visual.proj)[:, 0]
        e = e / e.norm(dim=-1, keepdim=True)
        with torch.no_grad():
            q_out, k_out = blk.attn.out_proj(q), blk.attn.out_proj(k)
        c = F.cosine_similarity(q_out[0, :1], k_out[0, 1:], dim=-1)
        lam = (c - c.min()) / (c.max() - c.min())
        maps = []
        for t in range(text_embs.shape[0]):
            score = (e[0] * text_embs[t]).sum()
            (grad,) = torch.autograd.grad(score, o, retain_graph=True)
            maps.append(torch.relu(lam * (v[0, 1:] @ grad[0, 0])).reshape(gh, gw))
    return torch.stack(maps).detach()
