"""timm ViT-family towers: ``VisionTransformer`` and ``Eva`` (EVA02), as an open_clip image tower
(``TimmModel.trunk``, e.g. SigLIP, EVA02-CLIP) or as a bare timm image classifier.

Explained attention (SPEC §1), by how the trunk pools:
- ``global_pool="token"`` (class token; EVA02-CLIP, timm classifiers): the last block's
  self-attention at the class token, keys = the patch tokens (register tokens are neither);
- ``global_pool="map"`` (SigLIP): the ``AttentionPoolLatent`` cross-attention from its learned
  latent query (queries: one map each, averaged) to the patch tokens; the trunk's blocks run before it;
- anything else (average pooling, no pooling) is refused: no attention sits at the pooling point.

After the explained attention come the trunk's own final norm, ``fc_norm`` and ``head``, then
open_clip's projection head when there is one. A classifier's "embedding" is its logit vector
and the explained score is the class logit (``score="logit"``, paper §4.1.4).

Other input sizes (``resolution="native"``, SPEC §4): a class-token ``VisionTransformer`` with a
plain ``PatchEmbed`` and learned absolute position embeddings takes any multiple of its patch size,
its grid's position embedding resized bicubically (:func:`~gradeclip.towers.base.resize_positions`,
as the other towers). Others are explained at their own input size only, and another size raises
:class:`~gradeclip.InputError` saying why (EVA's rotary embedding is built for one grid; a map-head
trunk runs as timm's own ``forward_features``, which checks the size).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ..errors import UnsupportedModelError
from .base import ImageTower, TokenBatch, resize_positions
from .timm_blocks import AttentionPoolLatentAdapter, TimmBlockAdapter


def _pooling(trunk: nn.Module) -> str:
    """How a timm trunk pools, for messages: its ``global_pool`` string or pooling module's type."""
    pool = getattr(trunk, "global_pool", None)
    if pool is None and hasattr(trunk, "head"):
        pool = getattr(trunk.head, "global_pool", None)
    if isinstance(pool, nn.Module):
        pool = getattr(pool, "pool_type", type(pool).__name__)
    return repr(pool) if pool is not None else "unknown"


def refuse_trunk(trunk: nn.Module, owner: str) -> UnsupportedModelError:
    """The error for a timm trunk gradeclip cannot explain, naming why."""
    name = type(trunk).__name__
    pool = _pooling(trunk)
    if "RelPos" in name:
        return UnsupportedModelError(
            f"{owner}: timm {name} trunk adds a relative position bias inside its attention, which changes the q·k "
            "arithmetic that Grad-ECLIP explains"
        )
    if pool in ("'avg'", "'avgmax'", "'max'", "'fast'", "'fastavg'") or "avg" in pool:
        why = f"pools with a global average (global_pool={pool}): no attention sits at the pooling point, so Grad-ECLIP does not apply"
    elif pool in ("''", "None"):
        why = "has no pooling to the embedding (global_pool='')"
    else:
        why = f"(global_pool={pool}) is not a class-token or attention-pooled ViT/EVA gradeclip knows"
    return UnsupportedModelError(f"{owner}: timm {name} trunk {why}")


def _out_width(modules: list[nn.Module], width: int) -> int:
    """The output width after ``modules`` applied in turn to features of ``width``."""
    for module in modules:
        for sub in reversed(list(module.modules())):
            if isinstance(sub, nn.Linear):
                width = sub.out_features
                break
    return width


class TimmViT(ImageTower):
    """Adapter for a timm ``VisionTransformer`` / ``Eva`` trunk, with an optional head after it.

    Args:
        trunk: the timm model.
        head: open_clip's projection head after the trunk (``TimmModel.head``), or None.
        score: ``"cosine"`` (CLIP tower) or ``"logit"`` (the trunk is the classifier).
        owner: the model's name, for messages.
        preprocess_cfg: the owning open_clip model's preprocessing; default: timm's
            ``pretrained_cfg`` of the trunk (a bare timm classifier).
    """

    def __init__(self, trunk: nn.Module, head: nn.Module | None, score: str, owner: str, preprocess_cfg: dict[str, Any] | None = None):
        from timm.models.eva import Eva
        from timm.models.vision_transformer import VisionTransformer

        if type(trunk) not in (VisionTransformer, Eva):
            raise refuse_trunk(trunk, owner)
        blocks = list(trunk.blocks)
        self.description = f"{owner}: timm {type(trunk).__name__} (width {trunk.embed_dim}, {len(blocks)} blocks)"
        # timm's ViT hands its pooler the patch tokens only (unless pool_include_prefix); EVA hands it all
        self.strip_prefix = isinstance(trunk, VisionTransformer) and not getattr(trunk, "pool_include_prefix", False)
        self.trunk = trunk
        self.outer = head
        timm_cfg = getattr(trunk, "pretrained_cfg", None) or {}
        self.preprocess_cfg = dict(preprocess_cfg) if preprocess_cfg is not None else {k: timm_cfg[k] for k in ("mean", "std") if k in timm_cfg}
        self.score = score
        self.prefix = trunk.num_prefix_tokens
        if getattr(trunk, "dynamic_img_size", False):
            raise UnsupportedModelError(f"{self.description}: dynamic image size is not supported")
        attn_pool = getattr(trunk, "attn_pool", None)
        if attn_pool is not None:  # the trunk runs as the model's own forward_features; its pooler is explained
            self.pooler: AttentionPoolLatentAdapter | None = AttentionPoolLatentAdapter(attn_pool, self.description)
            self.blocks = [self.pooler]
            width = attn_pool.out_features
        elif trunk.global_pool == "token" and getattr(trunk, "cls_token", None) is not None:
            if getattr(trunk, "rope_mixed", False):
                raise UnsupportedModelError(f"{self.description}: depth-dependent (mixed) rotary embeddings are not supported")
            rope = None
            if getattr(trunk, "rope", None) is not None:
                fixed = hasattr(trunk.rope, "feat_shape")  # as timm's Eva._pos_embed asks for it
                rope = trunk.rope.get_embed() if fixed else trunk.rope.get_embed(shape=trunk.patch_embed.grid_size)
            self.pooler = None
            self.blocks = [TimmBlockAdapter(b, f"{self.description}, block {i}", rope, self.prefix) for i, b in enumerate(blocks)]  # type: ignore[misc]
            width = trunk.embed_dim
        else:
            raise refuse_trunk(trunk, self.description)
        self.embed_dim = _out_width([trunk.fc_norm, trunk.head] + ([head] if head is not None else []), width)
        if score == "logit" and getattr(trunk, "num_classes", 0) == 0:
            raise UnsupportedModelError(f"{self.description}: the classifier has no classification head (num_classes=0)")
        embed = trunk.patch_embed  # a plain patch embedding, or a convolutional stem (MobileCLIP's MCi)
        self.model_grid: tuple[int, int] = tuple(embed.grid_size)  # type: ignore[assignment]
        self._input_size: tuple[int, int] = tuple(embed.img_size)  # type: ignore[assignment]
        self.patch_size = (self._input_size[0] // self.model_grid[0], self._input_size[1] // self.model_grid[1])
        self.fixed_size_reason = self._fixed_size_reason()
        self.any_size = self.fixed_size_reason is None

    def _fixed_size_reason(self) -> str | None:
        """Why the trunk takes its own input size only (None: any multiple of the patch size)."""
        t = self.trunk
        embed = t.patch_embed
        if self.pooler is not None:
            return "its attention-pool head runs as timm's forward_features, which is built for one input size"
        if getattr(t, "rope", None) is not None:
            return "its rotary position embedding is built for one patch grid"
        if type(embed).__name__ != "PatchEmbed" or not getattr(embed, "flatten", False) or getattr(embed, "dynamic_img_pad", False):
            return f"its {type(embed).__name__} stem is not a plain patch embedding"
        if getattr(t, "pos_embed", None) is None:
            return "it has no learned position embedding to resize"
        return None

    @property
    def input_size(self) -> tuple[int, int]:
        return self._input_size

    def embed(self, images: Tensor) -> TokenBatch:
        self.check_images(images)
        t = self.trunk
        images = images.to(device=self.device, dtype=self.dtype)
        n = self.model_grid[0] * self.model_grid[1]
        if self.pooler is not None:
            x = t.forward_features(images)
            if self.strip_prefix:
                x = x[:, self.prefix :]
            return TokenBatch(x, None, None, torch.arange(x.shape[1] - n, x.shape[1], device=x.device), None, self.model_grid)
        grid = self.model_grid
        if tuple(images.shape[-2:]) == self._input_size:
            x = t._pos_embed(t.patch_embed(images))
        else:
            x, grid = self._positioned(images)
        if isinstance(x, tuple):  # Eva returns (tokens, rotary embedding); the block adapters hold the latter
            x = x[0]
        x = t.norm_pre(x)
        n = grid[0] * grid[1]
        query = torch.zeros(x.shape[0], dtype=torch.long, device=x.device)
        return TokenBatch(x, None, query, torch.arange(self.prefix, self.prefix + n, device=x.device), None, grid)

    def _positioned(self, images: Tensor) -> tuple[Tensor, tuple[int, int]]:
        """timm's ``patch_embed`` + ``_pos_embed`` at another input size: the patch tokens of
        ``images``, the prefix tokens (class, registers), and the position embedding with its grid
        part resized to the new grid. Returns ``(tokens [B, prefix + h·w, D], (h, w))``."""
        t = self.trunk
        x = t.patch_embed.proj(images)
        grid = (int(x.shape[-2]), int(x.shape[-1]))
        x = t.patch_embed.norm(x.flatten(2).transpose(1, 2))
        pos = t.pos_embed[0]
        embeds_prefix = not getattr(t, "no_embed_class", False)
        prefix_pos, grid_pos = (pos[: self.prefix], pos[self.prefix :]) if embeds_prefix else (pos[:0], pos)
        grid_pos = resize_positions(grid_pos, self.model_grid, grid)
        prefix = [tok.expand(x.shape[0], -1, -1) for tok in (t.cls_token, getattr(t, "reg_token", None)) if tok is not None]
        if embeds_prefix:
            x = torch.cat([*prefix, x], dim=1) + torch.cat([prefix_pos, grid_pos])
        else:
            x = torch.cat([*prefix, x + grid_pos], dim=1)
        return t.pos_drop(x), grid

    def _after_pool(self, pooled: Tensor) -> Tensor:
        t = self.trunk
        z = t.head(t.head_drop(t.fc_norm(pooled)))
        return z if self.outer is None else self.outer(z)

    def head(self, z: Tensor) -> Tensor:
        return self._after_pool(self.trunk.norm(z))

    def token_head(self, z: Tensor) -> Tensor:
        """Class-token towers: the trunk's norm, ``fc_norm``, ``head`` and open_clip's projection are
        per-token, so any ``[..., D]`` → ``[..., E]``. Map-head towers have no per-token head."""
        if self.pooler is not None:
            return super().token_head(z)
        return self.head(z)

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        if self.pooler is None:
            return super().readout(x, o, batch)
        return self._after_pool(self.pooler.pooled(o))
