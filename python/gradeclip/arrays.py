"""User arrays (numpy arrays, torch tensors, lists of either) as the C-contiguous numpy arrays the
Rust core (:mod:`gradeclip.native`) takes: the one place where render and eval inputs are
converted and checked.

A batch is a list/tuple of per-item arrays (items may differ in size) or one array with a leading
item axis. Bad input raises :class:`~gradeclip.errors.InputError` with a message naming the item
(``maps[2] ...``); a wrong type or dtype raises its subclass
:class:`~gradeclip.errors.InputTypeError` (also a ``TypeError``).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from .errors import InputError, InputTypeError

Convert = Callable[[np.ndarray, str], np.ndarray]


def to_numpy(x: Any, what: str) -> np.ndarray:
    """``x`` as a numpy array: a torch tensor detached and moved to the CPU (low-precision floats
    as float32, which numpy can hold), a numpy array as it is, anything else through
    ``np.asarray`` (lists of numbers, PIL images). Objects that are not numbers raise
    :class:`InputTypeError` naming ``what``."""
    torch = sys.modules.get("torch")  # a tensor can only exist once torch is imported
    if torch is not None and isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype != torch.float32:
            x = x.float()  # bfloat16 has no numpy equivalent
        return x.numpy()
    if isinstance(x, np.ndarray):
        return x
    try:
        array = np.asarray(x)
    except ValueError as exc:  # nested lists of different lengths
        raise InputError(f"{what} is not a rectangular array: {exc}") from None
    if array.dtype.kind not in "biuf":  # bool, integers, floats
        raise InputTypeError(f"{what} must be a numpy array or a torch tensor, got {type(x).__name__}")
    return array


def split(
    batch: Any, what: str, rank: int, convert: Convert, *, lone_item: bool = False, allow_empty: bool = True
) -> tuple[list[np.ndarray], tuple[int, ...] | None]:
    """The items of ``batch``, each of ``rank`` dimensions and passed through ``convert(array, what)``.

    ``batch`` is a list/tuple of arrays or one array of ``rank + 1`` dimensions (converted whole,
    then split into views); with ``lone_item``, one array of ``rank`` dimensions is a batch of one.
    Returns the items and, for one batch array, the shape of each item (else None), so a caller
    can give back the form it was given. ``allow_empty=False`` refuses a batch of no items.
    """
    if isinstance(batch, (list, tuple)):
        if not batch and not allow_empty:
            raise InputError(f"{what} is empty")
        items = []
        for i, x in enumerate(batch):
            x = to_numpy(x, f"{what}[{i}]")
            if x.ndim != rank:
                raise InputError(f"{what}[{i}] must have {rank} dimensions, got shape {x.shape}")
            items.append(convert(x, f"{what}[{i}]"))
        return items, None
    array = to_numpy(batch, what)
    if lone_item and array.ndim == rank:
        return [convert(array, what)], None
    if array.ndim != rank + 1:
        lone = f"one {rank}-dimensional array, " if lone_item else ""
        raise InputError(
            f"{what} must be {lone}a batch of {rank + 1} dimensions or a list of {rank}-dimensional arrays, got shape {array.shape}"
        )
    if array.shape[0] == 0 and not allow_empty:
        raise InputError(f"{what} is an empty batch")
    array = convert(array, what)
    return list(array), array.shape[1:]


def as_float_map(x: np.ndarray, what: str) -> np.ndarray:
    """A floating-point map (or batch of maps) with no empty axis, as C-contiguous float32."""
    if not np.issubdtype(x.dtype, np.floating):
        raise InputTypeError(f"{what} must be floating point, got {x.dtype}")
    if 0 in x.shape[-2:]:
        raise InputError(f"{what} has an empty map (shape {x.shape})")
    return np.ascontiguousarray(x, dtype=np.float32)


def as_image(x: np.ndarray, what: str) -> np.ndarray:
    """A uint8 RGB image (or batch) ``[..., H, W, 3]`` with H, W ≥ 1, C-contiguous."""
    if x.dtype != np.uint8:
        raise InputTypeError(f"{what} must be uint8 (0..255 RGB), got {x.dtype}")
    if x.shape[-1] != 3:
        raise InputError(f"{what} must be RGB with a last axis of 3, got shape {x.shape}")
    if 0 in x.shape[-3:]:
        raise InputError(f"{what} has an empty image (shape {x.shape})")
    return np.ascontiguousarray(x)


def _check_real(x: np.ndarray, what: str) -> None:
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise InputTypeError(f"{what} must be bool or numeric, got {x.dtype}")


def as_plane(dtype: type) -> Convert:
    """A converter of real-valued (numeric or bool) planes to C-contiguous ``dtype``."""

    def convert(x: np.ndarray, what: str) -> np.ndarray:
        _check_real(x, what)
        return np.ascontiguousarray(x, dtype=dtype)

    return convert


def as_mask(x: np.ndarray, what: str) -> np.ndarray:
    """A binary mask (bool or numbers, non-zero = object) as C-contiguous uint8 0/1."""
    _check_real(x, what)
    return np.ascontiguousarray(x != 0).view(np.uint8)


def image_list(images: Any, what: str = "images") -> list[np.ndarray]:
    """One ``[H, W, 3]`` uint8 image, a batch ``[B, H, W, 3]`` or a non-empty list of images of
    any sizes, as a list of C-contiguous uint8 ``[H, W, 3]`` arrays."""
    return split(images, what, 3, as_image, lone_item=True, allow_empty=False)[0]


def plane_list(planes: Any, dtype: type, what: str) -> list[np.ndarray]:
    """One ``[H, W]``, a batch ``[B, H, W]`` or a non-empty list of real-valued planes, as
    C-contiguous ``dtype`` arrays."""
    return split(planes, what, 2, as_plane(dtype), lone_item=True, allow_empty=False)[0]


def mask_list(masks: Any) -> list[np.ndarray]:
    """Binary masks (``[H, W]``, ``[B, H, W]`` or a non-empty list; bool or numbers, non-zero =
    object) as C-contiguous uint8 0/1 arrays."""
    return split(masks, "masks", 2, as_mask, lone_item=True, allow_empty=False)[0]


def triple(values: Sequence[float], what: str) -> tuple[float, float, float]:
    """Three per-channel floats (mean or std)."""
    values = tuple(float(v) for v in values)
    if len(values) != 3:
        raise InputError(f"{what} must have 3 values (R, G, B), got {len(values)}")
    return values  # type: ignore[return-value]
