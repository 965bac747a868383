"""Turn raw grid maps into pixels: upsample, normalise, colour, overlay, encode PNG (SPEC §5, §9).

Thin over the Rust core (:mod:`gradeclip.native`): every function converts its inputs (with
:mod:`gradeclip.arrays`), then runs with the GIL released on the crate's thread pool
(``GRADECLIP_NUM_THREADS`` threads; safe in forked DataLoader workers). Inputs may be numpy arrays or torch tensors (moved to the CPU);
outputs are numpy arrays.

Batches come in two forms, and the output mirrors the input:

- one array: maps ``[N, h, w]``, images ``[N, H, W, 3]`` → one array out;
- a list of per-item arrays (maps ``[h_i, w_i]``, images ``[H_i, W_i, 3]``), for items of
  different sizes (dataset images) → a list out.

Maps are floating point (used as float32) and must be finite; images are uint8 RGB. Bad input
raises :class:`~gradeclip.errors.InputError` (a ``ValueError``; for a wrong type or dtype its
subclass :class:`~gradeclip.errors.InputTypeError`, also a ``TypeError``) with a message naming
the offending item, e.g. ``maps[3] contains NaN or infinity``; a file that cannot be written
raises ``OSError``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Literal, Union

import numpy as np

from . import native
from .arrays import as_float_map, as_image, split
from .errors import InputError, InputTypeError
from .text_render import text_html, text_png

__all__ = ["colorize", "encode_png", "normalize", "overlay", "save_overlays", "text_html", "text_png", "upsample"]

Colormap = Literal["jet", "viridis", "turbo"]
Compression = Literal["fastest", "fast", "balanced", "high"]
ArrayLike = Any  # numpy array or torch tensor
Maps = Union[np.ndarray, list[np.ndarray]]
Images = Union[np.ndarray, list[np.ndarray]]


def _maps(maps: ArrayLike) -> tuple[list[np.ndarray], tuple[int, ...] | None]:
    """Maps as C-contiguous float32 ``[h, w]`` arrays, and the item shape of one batch array
    (see :func:`gradeclip.arrays.split`)."""
    return split(maps, "maps", 2, as_float_map)


def _images(images: ArrayLike) -> tuple[list[np.ndarray], tuple[int, ...] | None]:
    """Images as C-contiguous uint8 ``[H, W, 3]`` arrays, and the item shape of one batch array."""
    return split(images, "images", 3, as_image)


def _check_count(what: str, got: int, want: int) -> None:
    if got != want:
        raise InputError(f"got {got} {what} for {want} maps; pass one per map")


def _unflatten(flat: np.ndarray, shapes: Sequence[tuple[int, ...]], item_shape: tuple[int, ...] | None) -> Maps:
    """Cut a flat native result into per-item arrays of ``shapes`` (views, no copy); or, when
    every item has shape ``item_shape``, into one ``[N, *item_shape]`` array."""
    if item_shape is not None:
        return flat.reshape(len(shapes), *item_shape)
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape))
        out.append(flat[start : start + size].reshape(shape))
        start += size
    return out


def _pair(s: Any, what: str) -> tuple[int, int]:
    """``s`` as a positive ``(H, W)`` of integers."""
    if not (isinstance(s, Sequence) and len(s) == 2 and all(_is_int(v) for v in s)):
        raise InputError(f"{what} must be a pair of integers (H, W), got {s!r}")
    h, w = int(s[0]), int(s[1])
    if h <= 0 or w <= 0:
        raise InputError(f"{what} must be positive, got {(h, w)}")
    return h, w


def _is_int(v: Any) -> bool:
    return isinstance(v, (int, np.integer)) and not isinstance(v, bool)


def _sizes(size: Any, n: int) -> tuple[list[tuple[int, int]], tuple[int, int] | None]:
    """``size`` as one ``(H, W)`` per map; and that size when one was given for all (else None)."""
    sizes = size.tolist() if isinstance(size, np.ndarray) else size
    if not isinstance(sizes, Sequence) or isinstance(sizes, str):
        raise InputError(f"size must be (H, W) or one (H, W) per map, got {size!r}")
    if len(sizes) == 2 and all(_is_int(v) for v in sizes):
        common = _pair(sizes, "size")
        return [common] * n, common
    _check_count("sizes", len(sizes), n)
    return [_pair(s, f"size[{i}]") for i, s in enumerate(sizes)], None


def upsample(
    maps: ArrayLike, size: Sequence[int] | Sequence[Sequence[int]], mode: Literal["bilinear", "bicubic"] = "bilinear"
) -> Maps:
    """Resize maps with half-pixel centres, as ``F.interpolate(..., align_corners=False)``.

    Args:
        maps: ``[N, h, w]`` floating array/tensor, or a list of ``[h_i, w_i]`` maps.
        size: one ``(H, W)`` for every map, or a sequence of one ``(H, W)`` per map.
        mode: ``"bilinear"`` or ``"bicubic"`` (Keys, a = -0.75, edge pixels repeated, as PyTorch).

    Returns:
        float32 ``[N, H, W]`` when ``maps`` is one array and ``size`` is one pair; otherwise a list
        of float32 ``[H_i, W_i]`` arrays. A constant map stays exactly constant.
    """
    items, item_shape = _maps(maps)
    sizes, common = _sizes(size, len(items))
    flat = native.upsample(items, sizes, mode)
    return _unflatten(flat, sizes, common if item_shape is not None else None)


def normalize(maps: ArrayLike) -> Maps:
    """Min-max normalise each map to [0, 1]: ``(m - min) / (max - min)``; a constant map → zeros.

    Args:
        maps: ``[N, h, w]`` floating array/tensor, or a list of ``[h_i, w_i]`` maps.

    Returns:
        float32 maps of the same shapes, in the same form (one array or a list).
    """
    items, item_shape = _maps(maps)
    flat = native.normalize(items)
    return _unflatten(flat, [m.shape for m in items], item_shape)


def colorize(maps: ArrayLike, colormap: Colormap = "jet") -> Maps:
    """Colour maps with values in [0, 1] (others are clamped) with ``jet`` (OpenCV's
    ``COLORMAP_JET``, byte for byte), ``viridis`` or ``turbo`` (matplotlib's).

    A value ``v`` picks table entry ``floor(255 * v + 0.5)``.

    Returns:
        uint8 RGB ``[N, h, w, 3]`` (or a list of ``[h_i, w_i, 3]``), in the form of ``maps``.
    """
    items, item_shape = _maps(maps)
    flat = native.colorize(items, colormap)
    return _unflatten(flat, [(*m.shape, 3) for m in items], None if item_shape is None else (*item_shape, 3))


def _check_alpha(alpha: float) -> float:
    alpha = float(alpha)
    if not 0.0 <= alpha <= 1.0:
        raise InputError(f"alpha must be in [0, 1], got {alpha}")
    return alpha


def overlay(images: ArrayLike, maps: ArrayLike, alpha: float = 0.5, colormap: Colormap = "jet") -> Images:
    """Blend each map over its image: ``(1 - alpha) * image + alpha * colour`` (SPEC §9).

    Each map (any grid size) is upsampled bilinearly to its image's size, min-max normalised and
    coloured (as :func:`upsample`, :func:`normalize`, :func:`colorize`); each channel is then
    ``floor((1 - alpha) * image + alpha * colour + 0.5)`` computed in float32.

    Args:
        images: uint8 RGB ``[N, H, W, 3]`` or a list of ``[H_i, W_i, 3]``.
        maps: ``[N, h, w]`` floating, or a list of ``[h_i, w_i]``; one per image.
        alpha: weight of the colour, in [0, 1].
        colormap: ``"jet"`` (default), ``"viridis"`` or ``"turbo"``.

    Returns:
        uint8 RGB overlays shaped like ``images``, in the form of ``images``.
    """
    image_items, item_shape = _images(images)
    map_items, _ = _maps(maps)
    _check_count("images", len(image_items), len(map_items))
    flat = native.overlay(image_items, map_items, _check_alpha(alpha), colormap)
    return _unflatten(flat, [im.shape for im in image_items], item_shape)


def encode_png(images: ArrayLike, compression: Compression = "fast") -> list[bytes]:
    """Encode uint8 RGB images (``[N, H, W, 3]`` or a list of ``[H_i, W_i, 3]``) as PNG files.

    ``compression`` picks the ``png`` crate's preset: ``"fast"`` (default; fdeflate) encoded about
    20x faster than ``"balanced"`` (zlib level 6, Pillow's default level) with files no larger;
    ``"fastest"`` is quicker still with ~15% larger files; ``"high"`` is zlib level 9. See
    ``docs/render.md`` for the measurements.

    Returns:
        One ``bytes`` object (a complete PNG file) per image.
    """
    items, _ = _images(images)
    return native.encode_png(items, compression)


def save_overlays(
    paths: Sequence[str | os.PathLike[str]],
    images: ArrayLike,
    maps: ArrayLike,
    alpha: float = 0.5,
    colormap: Colormap = "jet",
    compression: Compression = "fast",
) -> None:
    """Overlay each map on its image (as :func:`overlay`) and write it as a PNG to its path.

    Items are processed in parallel. Each file is written to a hidden temporary name in the
    same directory and renamed, so a path never holds a partial PNG. Directories must exist.
    Raises ``OSError`` naming ``paths[i]`` when a file cannot be written.
    """
    if isinstance(paths, (str, os.PathLike)):
        raise InputTypeError("paths must be a sequence of paths, one per map, not a single path")
    path_list = [os.fspath(p) for p in paths]
    image_items, _ = _images(images)
    map_items, _ = _maps(maps)
    _check_count("images", len(image_items), len(map_items))
    _check_count("paths", len(path_list), len(map_items))
    native.save_overlays(path_list, image_items, map_items, _check_alpha(alpha), colormap, compression)
