"""The Hugging Face ViT vision towers of ``CLIPModel`` and ``BlipForImageTextRetrieval``, which
differ only in their names, a pre-norm and the projection (SPEC §1, ViT row).

Explained: the last encoder layer's self-attention at the class token, keys = the patch tokens;
then ``post_layernorm`` and the projection. Other input sizes use the model's own position
interpolation (bicubic, class position kept: SPEC §4).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .base import ImageTower, TokenBatch
from .hf_blocks import PreNormBlock


def vit_geometry(cfg: Any) -> tuple[tuple[int, int], tuple[int, int]]:
    """``(patch size, the patch grid at the model's input size)`` of a Hugging Face ViT vision config."""
    patch, size = int(cfg.patch_size), int(cfg.image_size)
    return (patch, patch), (size // patch, size // patch)


class HFViTVision(ImageTower):
    """Adapter for a Hugging Face ViT ``vision`` module (``embeddings``, ``encoder.layers``,
    ``post_layernorm``) followed by ``projection``; ``pre_norm`` runs on the embeddings first
    (CLIP's ``pre_layrnorm``; ``None`` for BLIP)."""

    def __init__(self, family: str, model: nn.Module, vision: nn.Module, projection: nn.Module, pre_norm: nn.Module | None):
        layers = list(vision.encoder.layers)
        cfg = vision.config
        self.description = f"transformers {family} vision tower (width {cfg.hidden_size}, {len(layers)} layers, patch {cfg.patch_size})"
        self.model = model
        self.vision = vision
        self.projection = projection
        self.pre_norm = pre_norm
        self.blocks = [PreNormBlock(layer, f"{self.description}, layer {i}") for i, layer in enumerate(layers)]
        self.embed_dim = projection.out_features
        self.patch_size, self.model_grid = vit_geometry(cfg)

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        images = images.to(device=self.device, dtype=self.dtype)
        grid = (images.shape[-2] // self.patch_size[0], images.shape[-1] // self.patch_size[1])
        x = self.vision.embeddings(images, interpolate_pos_encoding=grid != self.model_grid)
        if self.pre_norm is not None:
            x = self.pre_norm(x)
        n = grid[0] * grid[1]
        query = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return TokenBatch(x, None, query, torch.arange(1, n + 1, device=x.device), None, grid)

    def head(self, z: Tensor) -> Tensor:
        return self.token_head(z)

    def token_head(self, z: Tensor) -> Tensor:
        """``post_layernorm`` then the projection on any ``[..., D]`` → ``[..., E]``."""
        return self.projection(self.vision.post_layernorm(z))
