"""The interface between towers and methods.

A *token tower* is a tower (image or text) explained through attention layers: it turns its inputs
into the token sequence entering its first explained layer (:class:`TokenBatch`), exposes those
layers (``blocks``: residual self-attention blocks, :class:`~gradeclip.towers.blocks.AttentionBlock`,
the last of which may instead be an attention pooler, :class:`~gradeclip.towers.blocks.ExplainedAttention`),
and maps the last layer's attention output at its query rows to the embedding (``readout``).
Methods never reach into a model's modules; they use only this interface. A new model family is
one new adapter module.

The explained score is ``cos(e, t)`` for CLIP-style towers (``score = "cosine"``) or the raw
output ``e · t`` for classifiers, whose "embedding" is the logit vector and whose targets are
one-hot class rows (``score = "logit"``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor
from torch.nn import functional as F

from ..attention import attend
from ..errors import InputError, UnsupportedModelError
from .blocks import AttentionBlock, ExplainedAttention


#: OpenAI CLIP's input normalisation: open_clip's default, and what transformers' CLIP and BLIP
#: image processors use
OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


@dataclass(frozen=True)
class TokenBatch:
    """Token sequences entering a tower's first block, with where to look.

    Attributes:
        x: ``[B, L, D]`` tokens entering ``blocks[0]`` (after embedding and any pre-norm; for a
            tower explained at an attention pooler, the trunk's output tokens entering it).
        attn_mask: additive mask ``[L, L]`` or ``[B, L, L]`` every block uses (``-inf`` = hidden), or None.
        query: ``[B]`` long, the query position of each row (class token, EOT, …), or None when the
            explained attention's queries are learned (attention poolers).
        keys: ``[N]`` long, the positions whose importance forms the map.
        key_mask: ``[B, N]`` bool (True = the key counts for this row), or None when all count.
        grid: the shape one row's map takes (``(h, w)`` for images, ``(N,)`` for texts).
    """

    x: Tensor
    attn_mask: Tensor | None
    query: Tensor | None
    keys: Tensor
    key_mask: Tensor | None
    grid: tuple[int, ...]


def rows(x: Tensor, index: Tensor) -> Tensor:
    """Pick one position per batch row: ``x`` ``[B, L, ...]``, ``index`` ``[B]`` → ``[B, ...]``."""
    return x[torch.arange(x.shape[0], device=x.device), index]


class TokenTower(ABC):
    """A tower explained through its attention layers (SPEC §1)."""

    #: human-readable description used in messages, e.g. ``"open_clip ViT (width 768, 12 blocks)"``
    description: str
    #: the explainable layers, first to last; all but the last are residual self-attention blocks
    blocks: list[ExplainedAttention]
    #: width E of the tower's embedding (the number of classes for a classifier)
    embed_dim: int
    #: whether the model's blocks take ``[B, L, D]`` (True) or ``[L, B, D]`` (False)
    batch_first: bool = True
    #: the explained score: ``"cosine"`` (CLIP-style) or ``"logit"`` (a classifier's class logit)
    score: str = "cosine"

    @abstractmethod
    def embed(self, inputs: Any) -> TokenBatch:
        """Validate ``inputs`` and return the tokens entering block 0, with query and key positions."""

    def head(self, z: Tensor) -> Tensor:
        """The query position's final token ``[B, D]`` → the unnormalised embedding ``[B, E]``.
        Towers explained at an attention pooler have no such per-token head and override :meth:`readout`."""
        raise NotImplementedError(f"{self.description}: no per-token head")

    def readout(self, x: Tensor, o: Tensor, batch: TokenBatch) -> Tensor:
        """The embedding ``[B, E]`` from the last explained layer's input ``x`` ``[B, L, D]`` and its
        attention output at the query rows ``o`` ``[B, Q, D]`` (before the output projection).

        The default is the class-token / EOT case: the last block's per-token rest at the query
        position, then :meth:`head`.
        """
        block = self.blocks[-1]
        assert isinstance(block, AttentionBlock) and batch.query is not None
        return self.head(block.finish(rows(x, batch.query), o[:, 0]))

    def _parameter(self) -> Tensor:
        return next(self.blocks[-1].module.parameters())

    def token_head(self, z: Tensor) -> Tensor:
        """The head applied to every token: final tokens ``[..., D]`` → ``[..., E]`` in the embedding space.

        Dense (per-patch) methods such as MaskCLIP and CLIP Surgery project every token the way the
        query token is projected. Towers whose head is not per-token (attention poolers) raise
        :class:`UnsupportedModelError`.
        """
        raise UnsupportedModelError(f"{self.description}: the head is not a per-token projection, so dense per-token features are undefined")

    @property
    def dtype(self) -> torch.dtype:
        """The dtype the tower computes in."""
        return self._parameter().dtype

    @property
    def device(self) -> torch.device:
        """The device the tower's weights live on."""
        return self._parameter().device

    def run_blocks(self, x: Tensor, blocks: list[ExplainedAttention], attn_mask: Tensor | None) -> Tensor:
        """Run ``blocks`` (the model's own forward) on batch-first ``x`` ``[B, L, D]``."""
        for block in blocks:
            assert isinstance(block, AttentionBlock)
            x = block.forward(x, attn_mask, self.batch_first)
        return x

    def run_blocks_with_attention(
        self, x: Tensor, blocks: list[ExplainedAttention], attn_mask: Tensor | None
    ) -> tuple[Tensor, list[Tensor]]:
        """Run ``blocks`` on batch-first ``x`` ``[B, L, D]`` with the model's heads, recomputed from the
        blocks' own weights so that each block's attention probabilities are available.

        Returns ``(x_out [B, L, D], probs)`` with ``probs[j]`` ``[B, H, L, L]`` float32, block ``j``'s
        softmax attention (rows = queries). Differentiable: under autograd, ``probs[j]`` lie on the
        path from ``x`` to ``x_out``, so gradients with respect to them are the model's.
        """
        probs = []
        for block in blocks:
            q, k, v = block.qkv(x)
            o, p = attend(q, k, v, block.heads, attn_mask)
            x = block.finish(x, o)
            probs.append(p)
        return x, probs

    def encode(self, inputs: Any) -> Tensor:
        """The unmodified model's embedding ``[B, E]`` (unnormalised) of ``inputs``: the model's own
        blocks up to the last explained layer, then that layer's attention with the model's heads at
        its query rows and :meth:`readout` (only the rows that reach the embedding are computed)."""
        batch = self.embed(inputs)
        x = self.run_blocks(batch.x, self.blocks[:-1], batch.attn_mask)
        last = self.blocks[-1]
        q, k, v, mask = last.query_qkv(x, batch.query, batch.attn_mask)
        o, _ = attend(q, k, v, last.heads, mask)
        return self.readout(x, o, batch)


class ImageTower(TokenTower):
    """An image tower: float images ``[B, 3, H, W]`` in, maps over a grid of ``patch_size`` cells."""

    #: pixels per map cell ``(ph, pw)``: the patch size of a ViT, the total stride of a CNN
    patch_size: tuple[int, int]
    #: the map grid at the model's own input size
    model_grid: tuple[int, int]
    #: whether inputs of another size are accepted (positional embeddings interpolated, SPEC §4)
    any_size: bool = True
    #: the preprocessing the model declares, in open_clip's ``preprocess_cfg`` keys (``mean``,
    #: ``std``, ``interpolation``, ``resize_mode``); a missing key means OpenAI CLIP's setting
    preprocess_cfg: dict[str, Any] = {}

    @property
    def mean(self) -> tuple[float, float, float]:
        """Per-channel mean ``(R, G, B)`` the model's inputs are normalised with (on the 0..1 scale)."""
        return _triple(self.preprocess_cfg.get("mean", OPENAI_MEAN))

    @property
    def std(self) -> tuple[float, float, float]:
        """Per-channel standard deviation ``(R, G, B)`` the model's inputs are divided by."""
        return _triple(self.preprocess_cfg.get("std", OPENAI_STD))

    @property
    def input_size(self) -> tuple[int, int]:
        """The model's own input size ``(H, W)`` in pixels."""
        return (self.model_grid[0] * self.patch_size[0], self.model_grid[1] * self.patch_size[1])

    def check_images(self, images: Tensor) -> None:
        """Raise :class:`InputError` unless ``images`` is a finite float ``[B, 3, H, W]`` batch with
        ``H`` and ``W`` multiples of the patch size (for towers fixed to their input size: that size)."""
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
        if not self.any_size and (height, width) != self.input_size:
            size = self.input_size
            why = getattr(self, "fixed_size_reason", None)
            raise InputError(
                f"{self.description} is explained at its own input size {size[0]}×{size[1]} only"
                f"{f' ({why})' if why else ''}, got {height}×{width}; use the model's preprocess"
            )
        if self.any_size and (height % ph or width % pw):
            raise InputError(
                f"image size {height}×{width} is not a multiple of the patch size {ph}×{pw}; "
                "resize it (gradeclip.native_preprocess does this) or use the model's preprocess"
            )
        if not torch.isfinite(images).all():
            raise InputError("images contain NaN or infinite values")


def _triple(values: Any) -> tuple[float, float, float]:
    r, g, b = (float(v) for v in values)
    return (r, g, b)


def resize_positions(pos: Tensor, grid: tuple[int, int], new_grid: tuple[int, int]) -> Tensor:
    """A grid's positional embedding ``[h·w, D]`` (raster order) resized to ``new_grid``: bicubic,
    align_corners=False (SPEC §4), computed in float32; returns ``[h'·w', D]`` in ``pos``'s dtype."""
    if tuple(new_grid) == tuple(grid):
        return pos
    cells = pos.float().reshape(1, grid[0], grid[1], -1).permute(0, 3, 1, 2)
    cells = F.interpolate(cells, size=new_grid, mode="bicubic", align_corners=False)
    return cells.permute(0, 2, 3, 1).reshape(new_grid[0] * new_grid[1], -1).to(pos.dtype)


class TextTower(TokenTower):
    """A text tower: token ids ``[T, L]`` in, with the positions whose importance is reported (SPEC §3)."""

    #: the longest token sequence the tower takes
    context_length: int

    @abstractmethod
    def embed(self, tokens: Tensor, whole_context: bool = False) -> TokenBatch:
        """As :meth:`TokenTower.embed`; with ``whole_context`` every position of the ids is run and
        is a key, also where a causal tower could stop at the batch's last end-of-text token."""

    @abstractmethod
    def reported(self, tokens: Tensor) -> Tensor:
        """Which positions of token ids ``[T, L]`` get an importance: ``[T, L]`` bool (the caption's
        own tokens, without start/end/class/padding tokens). Raises :class:`InputError` for bad ids."""
