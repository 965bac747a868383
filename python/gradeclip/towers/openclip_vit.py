"""open_clip ``VisionTransformer`` with class-token pooling (OpenAI CLIP ViT-*, open_clip ViT-*).

Explained attention: the last block's self-attention, query = the class token (position 0),
keys = the N patch tokens (SPEC §1). Inputs whose size differs from the model's get the patch
grid's positional embedding interpolated bicubically (SPEC §4, ``resolution="native"``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ..errors import InputError, UnsupportedModelError
from .base import TokenBatch, TokenTower
from .blocks import BlockAdapter


class OpenClipViT(TokenTower):
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
        self.blocks = [BlockAdapter(b, f"{self.description}, block {i}") for i, b in enumerate(blocks)]
        self.embed_dim = visual.proj.shape[1]
        self.batch_first = getattr(visual.transformer, "batch_first", True)
        self.patch_size: tuple[int, int] = tuple(visual.patch_size)  # type: ignore[assignment]
        self.model_grid: tuple[int, int] = tuple(visual.grid_size)  # type: ignore[assignment]

    def check_images(self, images: Tensor) -> None:
        """Raise :class:`InputError` unless ``images`` is a finite float ``[B, 3, H, W]`` batch with
        ``H`` and ``W`` multiples of the patch size."""
        if not isinstance(images, Tensor):
            raise InputError(f"images must be a torch.Tensor [B, 3, H, W], got {type(images).__name__}")
        if images.ndim != 4:
            raise InputError(f"images must have shape [B, 3, H, W], got rank {images.ndim} shape {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise InputError("images is an empty batch (B = 0)")
        if images.shape[1] != 3:
            raise InputError(f"images must have 3 channels, got {images.shape[1]} (shape {tuple(images.shape)})")
        if not images.is_floating_point():
            raise InputError(f"images must be a float tensor (already preprocessed), got dtype {images.dtype}")
        height, width = images.shape[-2:]
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise InputError(
                f"image size {height}×{width} is not a multiple of the patch size {ph}×{pw}; "
                "resize it (gradeclip.native_preprocess does this) or use the model's preprocess"
            )
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or infinite values")

    def positional_embedding(self, grid: tuple[int, int]) -> Tensor:
        """The positional embedding ``[1 + h·w, D]`` for a patch grid ``(h, w)``: the model's own at its
        grid, else its patch part interpolated bicubically (align_corners=False), class position kept."""
        pos = self.visual.positional_embedding
        if grid == self.model_grid:
            return pos
        gh0, gw0 = self.model_grid
        patches = pos[1:].float().reshape(1, gh0, gw0, -1).permute(0, 3, 1, 2)
        patches = F.interpolate(patches, size=grid, mode="bicubic", align_corners=False)
        patches = patches.permute(0, 2, 3, 1).reshape(grid[0] * grid[1], -1)
        return torch.cat([pos[:1], patches.to(pos.dtype)], dim=0)

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
