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
    """A registered method: its name, what it needs and costs, and where it comes from.

    Attributes:
        name: the name ``Explainer.explain_image(..., method=name)`` takes.
        text_specific: False when the method ignores the text (every text gets the same map).
        needs_gradients: whether the method runs a backward pass.
        forwards_per_image: rough cost in tower forwards per image (a backward ≈ 2 forwards).
        paper: the publication the method comes from.
        summary: one line saying what the map is.
        text_options: ``(option, default text or None)`` for options that take a text embedding; the
            :class:`~gradeclip.Explainer` accepts texts for them (empty allowed) and passes unit-norm
            embeddings ``[n, E]``, encoding the default text when the option is not given and it
            has a tokenizer.
    """

    name: str
    text_specific: bool
    needs_gradients: bool
    forwards_per_image: str
    paper: str
    summary: str
    text_options: tuple[tuple[str, str | None], ...] = ()
