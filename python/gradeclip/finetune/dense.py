"""The image tower's training forward with its dense features, the phrase maps on the current
weights, and the region embeddings they weight (SPEC §10).

One forward of the image tower gives both the global embedding (the model's own, class-token row
of the last block) and the dense features (the last block re-run with its attention replaced by
the values, ``o_i = v_i``, then the rest of the block, ``ln_post`` and projection: the
MaskCLIP/CLIPSelf form). The explanation maps start from the same tokens entering the last block
(detached), so they cost one extra pass of the last block per phrase batch, never a second
forward of the tower or a backward through it.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from ..attention import attend
from ..errors import InputError, UnsupportedModelError
from ..methods.registry import get_method
from ..towers.base import ImageTower, TokenBatch, rows
from ..towers.blocks import AttentionBlock, mask_rows

#: explanation methods whose maps may weight the dense features (the paper's Table VII ablation)
MAP_METHODS = ("gradeclip", "gradcam", "maskclip")


@dataclass
class ImageForward:
    """One training forward of the image tower.

    Attributes:
        embedding: ``[B, E]`` the model's image embedding (unnormalised), in the autograd graph.
        dense: ``[B, N, E]`` dense features of the N patch tokens (unnormalised), in the graph.
        tail: the tokens entering the last block (``tail.x`` ``[B, L, D]``, detached) with the
            tower's query and key positions: where the explanation maps start.
    """

    embedding: Tensor
    dense: Tensor
    tail: TokenBatch


def _last_block(tower: ImageTower) -> AttentionBlock:
    last = tower.blocks[-1]
    if not isinstance(last, AttentionBlock):
        raise UnsupportedModelError(
            f"{tower.description}: fine-tuning with dense features needs a ViT whose last layer is a residual "
            "self-attention block read at its class token; this tower ends in an attention pooler"
        )
    return last


def image_forward(tower: ImageTower, images: Tensor) -> ImageForward:
    """The embedding and dense features of ``images`` ``[B, 3, H, W]`` (preprocessed), in the graph.

    The embedding is the model's own (its heads, class-token row of the last block); the dense
    feature of patch i is ``head(finish(x_i, v_i))``: the last block with ``o_i = v_i``.
    """
    last = _last_block(tower)
    batch = tower.embed(images)
    x = tower.run_blocks(batch.x, tower.blocks[:-1], batch.attn_mask)
    q, k, v = last.qkv(x)
    assert batch.query is not None
    o, _ = attend(rows(q, batch.query).unsqueeze(1), k, v, last.heads, mask_rows(batch.attn_mask, batch.query))
    embedding = tower.readout(x, o, batch)
    dense = tower.token_head(last.finish(x[:, batch.keys], v[:, batch.keys]))
    return ImageForward(embedding, dense, replace(batch, x=x.detach()))


def dense_features(tower: ImageTower, images: Tensor) -> Tensor:
    """Dense features ``[B, h, w, E]`` (unnormalised) of ``images`` on the patch grid, without gradient."""
    with torch.no_grad():
        fwd = image_forward(tower, images)
    return fwd.dense.reshape(fwd.dense.shape[0], *fwd.tail.grid, -1)


class TailTower(ImageTower):
    """An image tower seen from the tokens entering its last block: ``embed`` ignores its input and
    returns the given tokens, ``blocks`` is the last block alone. Explanation methods run on it
    exactly as on the whole tower, minus the run-up."""

    def __init__(self, tower: ImageTower, tail: TokenBatch):
        self.tower = tower
        self.tail = tail
        self.description = tower.description
        self.blocks = tower.blocks[-1:]
        self.embed_dim = tower.embed_dim
        self.batch_first = tower.batch_first
        self.score = tower.score
        self.patch_size = tower.patch_size
        self.model_grid = tower.model_grid

    def embed(self, inputs: Any) -> TokenBatch:
        return self.tail

    def head(self, z: Tensor) -> Tensor:
        return self.tower.head(z)

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        return self.tower.readout(x, o, batch)

    def token_head(self, z: Tensor) -> Tensor:
        return self.tower.token_head(z)


def phrase_maps(tower: ImageTower, tail: TokenBatch, phrases: Tensor, method: str = "gradeclip") -> Tensor:
    """Explanation maps ``[B, K, N]`` float32 of each image against its own K phrases, without gradient.

    ``tail`` is :attr:`ImageForward.tail`; ``phrases`` ``[B, K, E]`` unit-norm phrase embeddings (any
    rows for padding slots). ``method`` is one of :data:`MAP_METHODS`, run with its defaults (SPEC
    §2 for Grad-ECLIP) on the current weights.
    """
    if method not in MAP_METHODS:
        raise InputError(f"--maps must be one of {', '.join(MAP_METHODS)}, got {method!r}")
    _, fn = get_method(method)
    out = fn(TailTower(tower, tail), None, phrases.detach().float())
    return out.maps.detach().flatten(2).float()


def map_weights(maps: Tensor) -> Tensor:
    """Spatial weights ``w = H / Σ H`` over the last axis (SPEC §10), uniform where ``Σ H = 0``.

    Negative map values (MaskCLIP's cosines) count as zero, so ``w ≥ 0`` sums to 1 everywhere.
    """
    h = maps.clamp_min(0)
    total = h.sum(dim=-1, keepdim=True)
    uniform = torch.full_like(h, 1.0 / h.shape[-1])
    return torch.where(total > 0, h / total.clamp_min(torch.finfo(h.dtype).tiny), uniform)


def region_embeddings(weights: Tensor, dense: Tensor) -> Tensor:
    """``r_bk = Σ_i w_bk,i F_b,i``: ``weights`` ``[B, K, N]``, ``dense`` ``[B, N, E]`` → ``[B, K, E]``."""
    return torch.einsum("bkn,bne->bke", weights.to(dense.dtype), dense)
