"""What every explanation method returns and how it describes itself."""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor


@dataclass
class MethodOutput:
    """Raw output of one method on one batch.

    Attributes:
        maps: ``[B, T, *grid]`` float32, unnormalised (``grid`` = the tower's key grid for
            token-level methods, the input's pixel size for pixel-level ones).
        scores: ``[B, T]`` float32, the score the method explains.
        model_scores: ``[B, T]`` float32, the unmodified model's cosine score.
        resolution: ``"tokens"`` (maps over the token grid) or ``"pixels"``.
        extras: method-specific tensors (e.g. ``"head_maps"``), documented per method.
    """

    maps: Tensor
    scores: Tensor
    model_scores: Tensor
    resolution: str = "tokens"
    extras: dict[str, Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class MethodInfo:
    """A registered method: its name, what it needs and costs, and where it comes from."""

    name: str
    text_specific: bool
    needs_gradients: bool
    forwards_per_image: str
    paper: str
    summary: str
