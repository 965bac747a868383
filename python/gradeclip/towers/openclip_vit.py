"""open_clip ``VisionTransformer`` with class-token pooling (OpenAI CLIP ViT-*, open_clip ViT-*).

Explained attention: the last block's self-attention, query = the class token (position 0),
keys = the N patch tokens (SPEC §1). Inputs whose size differs from the model's get the patch
grid's positional embedding interpolated bicubically (SPEC §4, ``resolution="native"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ImageTower, TokenBatch, resize_positions
from .blocks import BlockAdapter


class OpenClipViT(ImageTower):
    """Adapter for ``open_clip.transformer.VisionTransformer`` with ``pool_type="tok"``."""

    def __init__(self, visual: nn.Module):
        blocks = list(visual.transformer.resblocks)
        self.description = (
            f"open_clip VisionTransformer (width {visual.transformer.width}, {len(blocks)} blocks, "
            f"patch {visual.patch_size[0]}×{visual.patch_size[1]})"
        )
        if getattr(visual, "attn_pool", None) is not None:
            raise UnsupportedModelError(
                f"{self.description}: the tower pools with an attentional pooler (CoCa style); "
                "the class-token ViT adapter does not apply"
            )
        if visual.pool_type != "tok":
            raise UnsupportedModelError(
                f"{self.description}: pool_type={visual.pool_type!r} averages the tokens, so no attention "
                "sits at the pooling point and Grad-ECLIP does not apply"
            )
        if visual.proj is None:
            raise UnsupportedModelError(f"{self.description}: the tower has no output projection (pruned head)")
        self.visual = visual
        self.preprocess_cfg = dict(getattr(visual, "preprocess_cfg", None) or {})  # open_clip's, set when it builds the model
        self.blocks = [BlockAdapter(b, f"{self.description}, block {i}") for i, b in enumerate(blocks)]
        self.embed_dim = visual.proj.shape[1]
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.patch_size: tuple[int, int] = tuple(visual.patch_size)  # type: ignore[assignment]
        self.model_grid: tuple[int, int] = tuple(visual.grid_size)  # type: ignore[assignment]

    def positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The positional embedding ``[1 + h·w, D]`` for a patch grid ``(h, w)``: the model's own at its
        grid, else its patch part interpolated bicubically (align_corners=False), class position kept."""
        pos = self.visual.positional_embedding
        if grid == self.model_grid:
            return pos
        return torch.cat([pos[:1], resize_positions(pos[1:], self.model_grid, grid)], dim=0)

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        v = self.visual
        x = v.conv1(images.to(device=self.device, dtype=v.conv1.weight.dtype))  # [B, D, h, w]
        grid = (x.shape[-2], x.shape[-1])
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding(grid).to(x.dtype)
        x = v.ln_pre(x)
        n = grid[0] * grid[1]
        return TokenBatch(
            x=x,
            attn_mask=None,
            query=torch.zeros(x.shape[0], dtype=torch.long, device=x.device),
            keys=torch.arange(1, n + 1, device=x.device),
            key_mask=None,
            grid=grid,
        )

    def head(self, z: Tensor) -> Tensor:
        return self.token_head(z)

    def token_head(self, z: Tensor) -> Tensor:
        """``ln_post`` then the projection, on any ``[..., D]`` → ``[..., E]`` (class-token pooling makes
        the head per-token)."""
        return self.visual.ln_post(z) @ self.visual.proj
