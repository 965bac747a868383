"""The registry of explanation methods: one entry per method module."""

from __future__ import annotations

from typing import Any, Callable

from ..errors import UnknownMethodError
from . import clip_surgery, game, gradcam, gradeclip, m2ib, maskclip, raw_attention, rise, rollout
from .base import MethodInfo, MethodOutput

MethodFn = Callable[..., MethodOutput]

_REGISTRY: dict[str, tuple[MethodInfo, MethodFn]] = {
    info.name: (info, fn)
    for info, fn in (
        (gradeclip.INFO, gradeclip.grad_eclip),
        (raw_attention.INFO, raw_attention.raw_attention),
        (rollout.INFO, rollout.rollout),
        (gradcam.INFO, gradcam.gradcam),
        (maskclip.INFO, maskclip.maskclip),
        (game.INFO, game.game),
        (rise.INFO, rise.rise),
        (clip_surgery.INFO, clip_surgery.clip_surgery),
        (m2ib.INFO, m2ib.m2ib),
    )
}


def methods() -> dict[str, MethodInfo]:
    """Every registered method by name: text-specific or not, needs gradients, cost, paper."""
    return {name: info for name, (info, _) in _REGISTRY.items()}


def get_method(name: Any) -> tuple[MethodInfo, MethodFn]:
    """The registered ``(info, function)`` for ``name``; :class:`UnknownMethodError` lists valid names."""
    if name not in _REGISTRY:
        raise UnknownMethodError(f"unknown method {name!r}; valid methods: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]
