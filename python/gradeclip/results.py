"""Result objects returned by :class:`gradeclip.Explainer`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import Tensor


@dataclass(frozen=True)
class ImageExplanation:
    """Visual explanations of B images against T texts.

    Attributes:
        maps: ``[B, T, h, w]`` float32, raw (unnormalised) maps on the token grid of the explained
            input (``resolution == "tokens"``), or at the input's pixel size for pixel-based
            methods (``resolution == "pixels"``). On the model's device.
        scores: ``[B, T]`` float32, the score the method explains (for Grad-ECLIP with
            ``heads="single"``, the cosine of the single-head forward).
        model_scores: ``[B, T]`` float32, the unmodified model's cosine score.
        texts: the texts explained (None when text embeddings were given).
        method: the method's registered name.
        options: the options the method ran with.
        image_size: ``(H, W)`` of the explained (preprocessed) input.
        resolution: ``"tokens"`` or ``"pixels"``.
        extras: method-specific tensors (Grad-ECLIP ``per_head=True``: ``"head_maps"``
            ``[B, T, H, h, w]``).
        text_specific: False for text-agnostic methods (``raw_attention``, ``rollout``): their map
            ignores the text, so ``maps[:, t]`` is the same for every t.
    """

    maps: Tensor
    scores: Tensor
    model_scores: Tensor
    texts: list[str] | None
    method: str
    options: dict[str, Any]
    image_size: tuple[int, int]
    resolution: str = "tokens"
    extras: dict[str, Tensor] = field(default_factory=dict)
    text_specific: bool = True

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of each map."""
        return (self.maps.shape[-2], self.maps.shape[-1])
