"""open_clip ``ModifiedResNet`` (OpenAI CLIP RN50, RN101, RN50x4, RN50x16, RN50x64).

Explained attention (SPEC §1): the ``AttentionPool2d`` at the end of the CNN. The feature map's
H·W positions, preceded by their mean, get a positional embedding; the mean token (position 0) is
the query, the H·W positions are the map's keys. ``q``, ``k``, ``v`` come from the pool's own
``q_proj``, ``k_proj``, ``v_proj`` (no layer norm); the output is ``c_proj(o)`` at the query with no
residual and no MLP, so the readout is that projection alone. Inputs of another size (multiples of
32 px) get the spatial part of the positional embedding interpolated bicubically (SPEC §4).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ImageTower, TokenBatch, resize_positions
from .blocks import ExplainedAttention, QueryQKV

STRIDE = 32  # stem (×4) and three strided stages (×8)


class AttentionPool2dAdapter(ExplainedAttention):
    """open_clip's ``AttentionPool2d``: query = position 0 (the mean token), separate q/k/v projections."""

    def __init__(self, pool: nn.Module):
        self.module = pool
        self.heads = pool.num_heads

    def query_qkv(self, x: Tensor, query: Tensor | None, attn_mask: Tensor | None) -> QueryQKV:
        p = self.module
        return QueryQKV(p.q_proj(x[:, :1]), p.k_proj(x), p.v_proj(x), None)

    def out_proj(self, o: Tensor) -> Tensor:
        return self.module.c_proj(o)


class OpenClipResNet(ImageTower):
    """Adapter for ``open_clip.modified_resnet.ModifiedResNet``."""

    def __init__(self, visual: nn.Module):
        pool = getattr(visual, "attnpool", None)
        if pool is None:
            raise UnsupportedModelError(
                "open_clip ModifiedResNet without its attention pool: no attention at the pooling point"
            )
        width = pool.k_proj.in_features
        self.description = f"open_clip ModifiedResNet (feature width {width}, attention pool with {pool.num_heads} heads)"
        self.visual = visual
        self.preprocess_cfg = dict(getattr(visual, "preprocess_cfg", None) or {})  # open_clip's, set when it builds the model
        self.blocks = [AttentionPool2dAdapter(pool)]
        self.embed_dim = pool.c_proj.out_features
        self.patch_size = (STRIDE, STRIDE)
        side = round((pool.positional_embedding.shape[0] - 1) ** 0.5)
        self.model_grid = (side, side)

    def positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        """``[1 + h·w, C]``: the pool's own at its grid, else the spatial part resized (mean position kept)."""
        pos = self.visual.attnpool.positional_embedding
        if grid == self.model_grid:
            return pos
        return torch.cat([pos[:1], resize_positions(pos[1:], self.model_grid, grid)], dim=0)

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        v = self.visual
        x = images.to(device=self.device, dtype=v.conv1.weight.dtype)
        x = v.stem(x)
        x = v.layer4(v.layer3(v.layer2(v.layer1(x))))  # [B, C, h, w]
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B, h·w, C]
        x = torch.cat([x.mean(dim=1, keepdim=True), x], dim=1) + self.positional_embedding(grid).to(x.dtype)
        n = grid[0] * grid[1]
        return TokenBatch(
            x=x,
            attn_mask=None,
            query=torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            keys=torch.arange(1, n + 1, device=x.device),
            key_mask=None,
            grid=grid,
        )

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        return self.visual.attnpool.c_proj(o[:, 0])
