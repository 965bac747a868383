"""Turning user inputs (numpy arrays, torch tensors, lists of either) into what ``_native`` takes."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import numpy as np

from ..errors import InputError

T = TypeVar("T")


def to_numpy(x: Any) -> np.ndarray:
    """A numpy view of an array or a (CPU or device) torch tensor."""
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return x.detach().cpu().numpy()
    return np.asarray(x)


def image_list(images: Any, what: str = "images") -> list[np.ndarray]:
    """``images`` as a list of C-contiguous uint8 ``[H, W, 3]`` arrays.

    Accepts one ``[H, W, 3]`` image, a batch ``[B, H, W, 3]``, or a list of images of any sizes.
    """
    items = _split(images, 3, what)
    out = []
    for i, item in enumerate(items):
        if item.dtype != np.uint8:
            raise InputError(f"{what}[{i}] must be uint8 (0..255 RGB), got dtype {item.dtype}")
        if item.ndim != 3 or item.shape[2] != 3 or item.shape[0] == 0 or item.shape[1] == 0:
            raise InputError(f"{what}[{i}] must have shape [H, W, 3] with H, W ≥ 1, got {item.shape}")
        out.append(np.ascontiguousarray(item))
    return out


def plane_list(planes: Any, dtype: type, what: str) -> list[np.ndarray]:
    """``planes`` (one ``[H, W]``, a batch ``[B, H, W]`` or a list) as C-contiguous ``dtype`` arrays."""
    items = _split(planes, 2, what)
    out = []
    for i, item in enumerate(items):
        if item.ndim != 2:
            raise InputError(f"{what}[{i}] must have shape [H, W], got {item.shape}")
        if not (np.issubdtype(item.dtype, np.number) or item.dtype == np.bool_):
            raise InputError(f"{what}[{i}] must be numeric, got dtype {item.dtype}")
        out.append(np.ascontiguousarray(item, dtype=dtype))
    return out


def mask_list(masks: Any) -> list[np.ndarray]:
    """Binary masks (``[H, W]``, ``[B, H, W]`` or a list; bool or numbers, non-zero = object) as
    C-contiguous uint8 0/1 arrays."""
    out = []
    for i, item in enumerate(_split(masks, 2, "masks")):
        if item.ndim != 2:
            raise InputError(f"masks[{i}] must have shape [H, W], got {item.shape}")
        if not (np.issubdtype(item.dtype, np.number) or item.dtype == np.bool_):
            raise InputError(f"masks[{i}] must be bool or numeric, got dtype {item.dtype}")
        out.append(np.ascontiguousarray(item != 0).view(np.uint8))
    return out


def _split(x: Any, item_ndim: int, what: str) -> list[np.ndarray]:
    if isinstance(x, (list, tuple)):
        if not x:
            raise InputError(f"{what} is empty")
        return [to_numpy(item) for item in x]
    array = to_numpy(x)
    if array.ndim == item_ndim:
        return [array]
    if array.ndim == item_ndim + 1:
        if array.shape[0] == 0:
            raise InputError(f"{what} is an empty batch")
        return list(array)
    raise InputError(
        f"{what} must be one array of rank {item_ndim}, a batch of rank {item_ndim + 1} or a list, got shape {array.shape}"
    )


def native(fn: Callable[..., T], *args: Any) -> T:
    """Call a ``_native`` function, re-raising its ``ValueError`` as :class:`InputError`."""
    try:
        return fn(*args)
    except InputError:
        raise
    except ValueError as exc:
        raise InputError(str(exc)) from None


def triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    """Three per-channel floats (mean or std)."""
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise InputError(f"{what} must have 3 values (R, G, B), got {len(values)}")
    return values  # type: ignore[return-value]
