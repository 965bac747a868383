"""open_clip ``VisionTransformer`` with an attentional pooler (CoCa's ``attn_pool``).

Explained attention (SPEC §1): the pooler's cross-attention from its learned queries to the
transformer's output tokens; the map's keys are the N patch tokens (the class token is a key of
the pooler too, but not a map cell). Only the queries whose outputs reach the contrastive
embedding are explained, one map each, averaged: with ``pool_type="tok"`` (open_clip's CoCa) the
embedding is ``ln_post`` of the first query's output, so that one query; with ``"avg"`` the mean
over queries 1…n−1. The pooler's ``q = ln_q(query) W_q + b_q``, ``k = ln_k(x) W_k + b_k``,
``v = ln_k(x) W_v + b_v`` (``nn.MultiheadAttention`` with its own k/v width). The readout is the
pooler's output projection, ``ln_post``, the pooling over the explained queries and ``proj``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import UnsupportedModelError
from .base import ImageTower, TokenBatch, resize_positions
from .blocks import ExplainedAttention, QueryQKV


class AttentionalPoolerAdapter(ExplainedAttention):
    """open_clip's ``AttentionalPooler`` explained at the learned queries ``queries``."""

    def __init__(self, pooler: nn.Module, queries: slice):
        attn = pooler.attn
        if attn.bias_k is not None or attn.add_zero_attn:
            raise UnsupportedModelError("attentional pooler with bias_k / add_zero_attn is not supported")
        self.module = pooler
        self.heads = attn.num_heads
        self.queries = queries
        if attn._qkv_same_embed_dim:
            self.w_q, self.w_k, self.w_v = attn.in_proj_weight.chunk(3)
        else:
            self.w_q, self.w_k, self.w_v = attn.q_proj_weight, attn.k_proj_weight, attn.v_proj_weight
        self.b_q, self.b_k, self.b_v = (None, None, None) if attn.in_proj_bias is None else attn.in_proj_bias.chunk(3)

    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        p = self.module
        h = p.ln_k(x)
        q = F.linear(p.ln_q(p.query[self.queries]), self.w_q, self.b_q)
        return QueryQKV(q.expand(x.shape[0], -1, -1), F.linear(h, self.w_k, self.b_k), F.linear(h, self.w_v, self.b_v), None)

    def out_proj(self, o: Tensor) -> Tensor:
        return self.module.attn.out_proj(o)


class OpenClipCoCaViT(ImageTower):
    """Adapter for an open_clip ``VisionTransformer`` whose ``attn_pool`` makes the embedding."""

    def __init__(self, visual: nn.Module):
        blocks = list(visual.transformer.resblocks)
        pooler = visual.attn_pool
        n_queries = pooler.query.shape[0]
        self.description = (
            f"open_clip VisionTransformer with an attentional pooler ({n_queries} queries, "
            f"width {visual.transformer.width}, {len(blocks)} blocks)"
        )
        if getattr(visual, "attn_pool_contrastive", None) is not None:
            raise UnsupportedModelError(
                f"{self.description}: attn_pool_type={visual.attn_pool_type!r} (open_clip's untested paper-style "
                "CoCa pooling) is not supported; the original CoCa pooler is"
            )
        if visual.pool_type == "tok":
            queries = slice(0, 1)
        elif visual.pool_type == "avg" and n_queries > 1:
            queries = slice(1, n_queries)
        else:
            raise UnsupportedModelError(
                f"{self.description}: pool_type={visual.pool_type!r} after the pooler gives no single pooled embedding"
            )
        if visual.proj is None:
            raise UnsupportedModelError(f"{self.description}: the tower has no output projection")
        self.visual = visual
        self.preprocess_cfg = dict(getattr(visual, "preprocess_cfg", None) or {})  # open_clip's, set when it builds the model
        self.blocks = [AttentionalPoolerAdapter(pooler, queries)]
        self.embed_dim = visual.proj.shape[1]
        self.patch_size: tuple[int, int] = tuple(visual.patch_size)  # type: ignore[assignment]
        self.model_grid: tuple[int, int] = tuple(visual.grid_size)  # type: ignore[assignment]

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        v = self.visual
        x = v.conv1(images.to(device=self.device, dtype=v.conv1.weight.dtype))  # [B, D, h, w]
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)
        pos = v.positional_embedding
        if grid != self.model_grid:
            pos = torch.cat([pos[:1], resize_positions(pos[1:], self.model_grid, grid)], dim=0)
        x = torch.cat([v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1) + pos.to(x.dtype)
        x = v.ln_pre(x)
        x = v.transformer(x)  # batch-first in and out, whatever the blocks' layout
        n = grid[0] * grid[1]
        return TokenBatch(x=x, attn_mask=None, query=None, keys=torch.arange(1, n + 1, device=x.device), key_mask=None, grid=grid)

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        pooled = self.visual.ln_post(self.blocks[0].out_proj(o)).mean(dim=1)  # [B, Q, D] → [B, D]
        return pooled @ self.visual.proj
