"""Straightforward references for the baseline methods, written from their papers (and, where the
paper leaves a choice open, the authors' published code), for parity tests only.

One image (and one text) at a time, full attention matrices, per-head loops, directly on open_clip's
modules — sharing no code with gradeclip.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from reference import vit_tokens
from skimage.transform import resize


def qkv(blk, x):
    """q, k, v [L, D] of one open_clip block for tokens x [1, L, D]."""
    width = x.shape[-1]
    h = blk.ln_1(x)[0]
    w, b = blk.attn.in_proj_weight, blk.attn.in_proj_bias
    return h @ w[:width].T + b[:width], h @ w[width : 2 * width].T + b[width : 2 * width], h @ w[2 * width :].T + b[2 * width :]


def multi_head(q, k, v, n_heads):
    """Softmax attention per head: returns (o [L, D], attn [H, L, L]), with attn on the path to o."""
    d = q.shape[-1] // n_heads
    heads = [slice(hd * d, (hd + 1) * d) for hd in range(n_heads)]
    attn = torch.softmax(torch.stack([q[:, sl] @ k[:, sl].T / math.sqrt(d) for sl in heads]), dim=-1)
    return torch.cat([attn[hd] @ v[:, sl] for hd, sl in enumerate(heads)], dim=-1), attn


def block_with_attention(blk, x):
    """The block's forward written out, returning (z [1, L, D], attn [H, L, L])."""
    q, k, v = qkv(blk, x)
    o, attn = multi_head(q, k, v, blk.attn.num_heads)
    y = x + blk.ls_1(blk.attn.out_proj(o.unsqueeze(0)))
    return y + blk.ls_2(blk.mlp(blk.ln_2(y))), attn


def embed(visual, z_cls):
    return visual.ln_post(z_cls) @ visual.proj


def image_embedding(model, image):
    """The model's embedding [E] of one image at its own size (positional embedding interpolated)."""
    visual = model.visual
    x, _ = vit_tokens(visual, image)
    with torch.no_grad():
        for blk in visual.transformer.resblocks:
            x = blk(x)
        return embed(visual, x[:, 0])[0]


def model_score(model, image, text_emb):
    return F.cosine_similarity(image_embedding(model, image), text_emb, dim=0)


def raw_attention_ref(model, image):
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    with torch.no_grad():
        for blk in blocks[:-1]:
            x = blk(x)
        _, attn = block_with_attention(blocks[-1], x)
    return attn.mean(0)[0, 1:].reshape(grid)


def rollout_ref(model, image):
    """Abnar & Zuidema: joint = Â_L ⋯ Â_1 with Â = (A + I)/2 row-normalised; class row over patches."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    length = x.shape[1]
    joint = torch.eye(length)
    with torch.no_grad():
        for blk in visual.transformer.resblocks:
            x, attn = block_with_attention(blk, x)
            a = 0.5 * attn.mean(0) + 0.5 * torch.eye(length)
            a = a / a.sum(-1, keepdim=True)
            joint = a @ joint
    return joint[0, 1:].reshape(grid)


def gradcam_ref(model, image, text_emb):
    """Selvaraju et al. on the tokens entering the last block: w_c = mean_i ∂s/∂x_ic, ReLU(Σ_c w_c x_ic)."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    with torch.no_grad():
        for blk in blocks[:-1]:
            x = blk(x)
    x = x.detach().requires_grad_()
    z = blocks[-1](x)
    s = F.cosine_similarity(embed(visual, z[:, 0])[0], text_emb, dim=0)
    (g,) = torch.autograd.grad(s, x)
    weights = g[0, 1:].mean(0)
    return torch.relu(x[0, 1:] @ weights).detach().reshape(grid)


def maskclip_ref(model, image, text_emb):
    """Zhou et al.: each patch's value through the output projection, ln_post, proj; cosine with the text."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    with torch.no_grad():
        for blk in blocks[:-1]:
            x = blk(x)
        _, _, v = qkv(blocks[-1], x)
        feats = embed(visual, blocks[-1].ls_1(blocks[-1].attn.out_proj(v[1:])))
        sim = F.normalize(feats, dim=-1) @ text_emb
    return sim.reshape(grid)


def game_ref(model, image, text_emb, start_layer=0):
    """Chefer et al. 2021: R = I; R += mean_h(ReLU(∇A ⊙ A)) R for each block from start_layer."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    start = start_layer % len(blocks)
    with torch.no_grad():
        for blk in blocks[:start]:
            x = blk(x)
    attns = []
    for blk in blocks[start:]:
        x, attn = block_with_attention(blk, x)
        attns.append(attn)
    s = F.cosine_similarity(embed(visual, x[:, 0])[0], text_emb, dim=0)
    grads = torch.autograd.grad(s, attns)
    length = x.shape[1]
    relevance = torch.eye(length)
    for attn, grad in zip(attns, grads):
        cam = (grad * attn).clamp(min=0).mean(0)
        relevance = relevance + cam @ relevance
    return relevance[0, 1:].detach().reshape(grid)


def rise_masks_ref(n_masks, cells, p, size, seed):
    """Petsiuk et al.'s generate_masks (scikit-image bilinear resize, random crop), with the random
    numbers drawn in gradeclip's documented order. Edge mode 'edge' (hold the border value)."""
    generator = torch.Generator().manual_seed(seed)
    grid = (torch.rand(n_masks, cells, cells, generator=generator) < p).float().numpy()
    cell = np.ceil(np.array(size) / cells).astype(int)
    shift_y = torch.randint(0, int(cell[0]), (n_masks,), generator=generator)
    shift_x = torch.randint(0, int(cell[1]), (n_masks,), generator=generator)
    up_size = (cells + 1) * cell
    masks = np.empty((n_masks, *size), dtype=np.float32)
    for i in range(n_masks):
        up = resize(grid[i], up_size, order=1, mode="edge", anti_aliasing=False)
        y, x = int(shift_y[i]), int(shift_x[i])
        masks[i] = up[y : y + size[0], x : x + size[1]]
    return torch.from_numpy(masks)


def rise_ref(model, image, text_embs, n_masks, cells, p, seed):
    """Saliency [T, H, W] = Σ_i s(image · mask_i) · mask_i / (N · p), one masked image at a time."""
    size = tuple(image.shape[-2:])
    masks = rise_masks_ref(n_masks, cells, p, size, seed)
    saliency = torch.zeros(text_embs.shape[0], *size)
    with torch.no_grad():
        for mask in masks:
            e = image_embedding(model, image * mask)
            for t, text_emb in enumerate(text_embs):
                saliency[t] += F.cosine_similarity(e, text_emb, dim=0) * mask
    return saliency / (n_masks * p)


def clip_surgery_ref(model, image, text_embs, surgery_blocks, mode, redundant=None):
    """Li et al. 2023 as in the authors' clip_surgery_model.py and clip_feature_surgery, for one image:
    returns [T, h, w]."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    first = len(blocks) - surgery_blocks
    with torch.no_grad():
        for blk in blocks[:first]:
            x = blk(x)
        x_new = None
        for blk in blocks[first:]:
            _, _, v = qkv(blk, x)  # the v-v path reads the original path's tokens
            o, _ = multi_head(v, v, v, blk.attn.num_heads)
            x_res = blk.ls_1(blk.attn.out_proj(o)).unsqueeze(0)
            x_new = (x if x_new is None else x_new) + x_res  # skip the FFN on the new path
            x = blk(x)
        x_new = x_new.clone()
        x_new[:, 0] = x[:, 0]
        feats = F.normalize(embed(visual, x_new[0]), dim=-1)  # [L, E]
        if mode == "texts":
            prob = feats @ text_embs.T
            prob = (prob * 2).softmax(-1)
            w = prob / prob.mean(-1, keepdim=True)
            n_i, n_t, c = feats.shape[0], text_embs.shape[0], feats.shape[1]
            elementwise = feats.reshape(n_i, 1, c) * text_embs.reshape(1, n_t, c)
            elementwise = elementwise * w.reshape(n_i, n_t, 1)
            sim = (elementwise - elementwise.mean(1, keepdim=True)).sum(-1)
        elif mode == "redundant":
            sim = feats @ (text_embs - redundant).T
        else:
            sim = feats @ text_embs.T
    return sim[1:].T.reshape(-1, *grid)


class Bottleneck(torch.nn.Module):
    """M2IB's InformationBottleneck (scripts/iba.py of the authors' repository)."""

    def __init__(self, shape):
        super().__init__()
        self.alpha = torch.nn.Parameter(torch.full((1, *shape), 5.0))
        self.buffer_capacity = None

    def forward(self, x, noise):
        lamb = torch.sigmoid(self.alpha).expand(x.shape[0], x.shape[1], -1)
        masked_mu = x * lamb
        masked_var = (1 - lamb) ** 2
        self.buffer_capacity = -0.5 * (1 + torch.log(masked_var) - masked_mu**2 - masked_var)
        return masked_mu + masked_var.sqrt() * noise


def m2ib_ref(model, image, text_emb, layer, beta, steps, lr, samples, seed):
    """Wang et al. 2023 for one (image, text): the bottleneck after block `layer`, fitted with Adam on
    beta·capacity − cosine over a batch of `samples` noisy copies; capacity summed over channels."""
    visual = model.visual
    x, grid = vit_tokens(visual, image)
    blocks = list(visual.transformer.resblocks)
    index = layer % len(blocks)
    with torch.no_grad():
        for blk in blocks[: index + 1]:
            x = blk(x)
    bottleneck = Bottleneck(x.shape[1:])
    optimiser = torch.optim.Adam(bottleneck.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    features = x.expand(samples, -1, -1)
    for _ in range(steps):
        noise = torch.randn(samples, *x.shape[1:], generator=generator)
        t = bottleneck(features, noise)
        for blk in blocks[index + 1 :]:
            t = blk(t)
        e = embed(visual, t[:, 0])
        fitting = F.cosine_similarity(text_emb.expand(samples, -1), e, eps=1e-6).mean()
        loss = beta * bottleneck.buffer_capacity.mean() - fitting
        optimiser.zero_grad()
        (bottleneck.alpha.grad,) = torch.autograd.grad(loss, [bottleneck.alpha])
        optimiser.step()
    capacity = bottleneck.buffer_capacity.mean(0).sum(-1)
    return capacity[1:].detach().reshape(grid)
