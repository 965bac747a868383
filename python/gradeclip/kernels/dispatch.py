"""Choose the implementation of the map step. This is the only place a backend is picked.

``GRADECLIP_BACKEND`` (read at every call): ``auto`` (default) runs the fused Triton kernel on
CUDA tensors when triton imports and the PyTorch path everywhere else; ``triton`` and ``torch``
force one, and forcing one that cannot run raises :class:`BackendUnavailableError`. ``triton``
also runs on CPU tensors under ``TRITON_INTERPRET=1`` (Triton's interpreter: slow, for tests).
"""

from __future__ import annotations

import functools
import logging
import os

import torch
from torch import Tensor

from ..errors import BackendUnavailableError, InputError
from .maps_torch import maps_torch, spatial_weights
from .maps_triton import maps_triton, unavailable_reason

ENV = "GRADECLIP_BACKEND"
BACKENDS = ("auto", "triton", "torch")

logger = logging.getLogger(__name__)


def requested_backend() -> str:
    """The value of ``GRADECLIP_BACKEND`` (``"auto"`` when unset or empty); :class:`InputError` if unknown."""
    value = os.environ.get(ENV, "").strip().lower() or "auto"
    if value not in BACKENDS:
        raise InputError(f"{ENV}={value!r} is not one of {', '.join(BACKENDS)}")
    return value


def select_backend(device: torch.device) -> str:
    """``"triton"`` or ``"torch"``: the map implementation for tensors on ``device``.

    Raises :class:`BackendUnavailableError` when ``GRADECLIP_BACKEND=triton`` cannot run here.
    """
    requested = requested_backend()
    if requested == "torch":
        return _chosen("torch", f"{ENV}=torch")
    reason = unavailable_reason(device)
    if requested == "triton":
        if reason is not None:
            raise BackendUnavailableError(f"{ENV}=triton, but {reason}")
        return _chosen("triton", f"{ENV}=triton, device {device.type}")
    if reason is None and device.type == "cuda":
        return _chosen("triton", "auto: CUDA tensors and triton imports")
    return _chosen("torch", f"auto: {reason or f'the tensors are on {device.type!r}, not CUDA'}")


@functools.cache
def _log_choice(backend: str, why: str) -> None:
    logger.debug("Grad-ECLIP maps: %s backend (%s)", backend, why)


def _chosen(backend: str, why: str) -> str:
    _log_choice(backend, why)  # once per distinct decision
    return backend


def compute_maps(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    g: Tensor,
    *,
    spatial: str,
    heads: int,
    probs: Tensor | None = None,
    key_mask: Tensor | None = None,
) -> Tensor:
    """Grad-ECLIP maps over the map keys (SPEC §2 steps 3–4).

    ``q`` ``[B, D]`` query row and ``k`` ``[B, N, D]`` keys (both in the chosen qk space),
    ``v`` ``[B, N, D]`` values, ``g`` ``[B, T, D]`` channel weights, ``probs`` ``[B, H, N]``
    (for ``spatial="softmax"``), ``key_mask`` ``[B, N]`` bool. Returns ``[B, T, N]`` float32,
    from the backend :func:`select_backend` picks.
    """
    if select_backend(k.device) == "triton":
        return maps_triton(q, k, v, g, spatial=spatial, heads=heads, probs=probs, key_mask=key_mask)
    lam = spatial_weights(q, k, spatial, heads, probs, key_mask)
    return maps_torch(v, g, lam)
