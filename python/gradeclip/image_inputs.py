"""Images as people have them — PIL images, uint8 arrays, file paths — turned into model inputs, with
a record of how each was mapped, so that a map can be drawn back over the original photo.

How an image becomes the model input — the model's geometry, the resize and crop, native
resolution, the :class:`~gradeclip.preprocessing.ImageMapping` — is :mod:`gradeclip.preprocessing`
(:class:`~gradeclip.preprocessing.InputPreparation`, which dataset runs' workers apply too).

- :func:`prepare_images`: the pixels of each image (:func:`gradeclip.data.decode_image` for paths),
  the batch ``[B, 3, H, W]`` the model gets, and each image's :class:`ImageMapping`. With
  ``resolution="model"`` the shorter side is resized to the input size (bicubic, Pillow — what
  open_clip's and transformers' own preprocessing do) and the centre kept; ``"squash"`` models are
  resized to the input size; ``resolution="native"`` resizes to :func:`gradeclip.native_size` (patch
  multiples at the image's own aspect ratio, no crop).
- :func:`overlay_original`: a map over the original image at the original's own size: the map is
  upsampled onto the region of the original the model saw (the crop box), coloured and blended there,
  and the border the crop cut away is shown dimmed (:data:`DIM` of its brightness).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from PIL import Image
from torch import Tensor, nn

from .errors import InputError
from .preprocessing import ImageMapping, InputPreparation

DIM = 0.35  # brightness kept where the model's crop cut the original away
ImageLike = Any  # PIL image, uint8 array [H, W, 3] / [H, W], or a path


@dataclass(frozen=True)
class ImageInput:
    """An explained image as it was given: ``pixels`` uint8 RGB ``[H, W, 3]`` and its ``mapping``."""

    pixels: np.ndarray
    mapping: ImageMapping


def as_pixels(image: ImageLike, what: str = "image") -> np.ndarray:
    """``image`` as uint8 RGB ``[H, W, 3]``: a PIL image (converted to RGB), a uint8 array
    ``[H, W, 3]`` or ``[H, W]`` (grey), or a path to an image file (decoded with EXIF orientation)."""
    if isinstance(image, (str, os.PathLike)):
        from .data import UnreadableImage, load_image

        try:
            return load_image(image)
        except (UnreadableImage, OSError) as exc:
            raise InputError(f"{what}: {exc}") from exc
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
            raise InputError(f"{what} as an array must be uint8 [H, W, 3] or [H, W], got {image.dtype} {image.shape}")
        return np.ascontiguousarray(np.stack([image] * 3, axis=-1) if image.ndim == 2 else image)
    raise InputError(f"{what} must be a PIL image, a uint8 array, a path or a preprocessed tensor, got {type(image).__name__}")


def is_image_like(images: Any) -> bool:
    """Whether ``images`` is one image or a list of images that :func:`prepare_images` takes
    (rather than a preprocessed tensor)."""
    one = (Image.Image, np.ndarray, str, os.PathLike)
    return isinstance(images, one) or (isinstance(images, Sequence) and len(images) > 0 and all(isinstance(i, one) for i in images))


def prepare_images(
    images: ImageLike | Sequence[ImageLike], model: nn.Module, resolution: str = "model", max_short_side: int | None = None
) -> tuple[Tensor, list[ImageInput]]:
    """Preprocess images for ``model`` as its own preprocessing does (or at native resolution).

    Args:
        images: one image or a list (PIL images, uint8 arrays ``[H, W, 3]`` / ``[H, W]``, paths).
        model: the model (its :func:`~gradeclip.preprocessing.input_geometry` and, for
            ``"native"``, its patch size).
        resolution: ``"model"`` (the model's input size) or ``"native"`` (about the image's own size,
            sides rounded to patch multiples; all images must come out the same size to share a batch).
        max_short_side: with ``"native"``, cap the shorter side at this many pixels.

    Returns:
        float32 ``[B, 3, H, W]`` (CPU) and one :class:`ImageInput` per image.
    """
    preparation = InputPreparation.of(model, resolution, max_short_side)
    items = [images] if isinstance(images, (Image.Image, np.ndarray, str, os.PathLike)) else list(images)
    if not items:
        raise InputError("images is empty: give at least one image")
    inputs, batch = [], []
    for i, item in enumerate(items):
        pixels = as_pixels(item, f"images[{i}]")
        resized, mapping = preparation.resize(pixels)
        inputs.append(ImageInput(pixels, mapping))
        batch.append(resized)
    sizes = sorted({b.shape[:2] for b in batch})
    if len(sizes) > 1:
        raise InputError(f"at native resolution the images come out at different sizes {sizes}; explain them one at a time")
    return preparation.normalise(np.stack(batch)), inputs


def overlay_original(
    pixels: np.ndarray, grid: Any, mapping: ImageMapping, alpha: float = 0.5, colormap: str = "jet", dim: float = DIM
) -> np.ndarray:
    """The map ``grid`` ``[h, w]`` (raw, any scale) drawn over the original image ``pixels`` uint8
    ``[H, W, 3]`` at its own size.

    The map covers the part of the original the model saw (``mapping.box()``, rounded to whole
    pixels): it is upsampled bilinearly to that region, min-max normalised, coloured and blended
    there (as :func:`gradeclip.render.overlay`). Outside it — the border a centre crop cut away —
    the original is shown at ``dim`` of its brightness.

    Returns:
        uint8 RGB ``[H, W, 3]``.
    """
    from . import render

    height, width = pixels.shape[:2]
    if (height, width) != mapping.original:
        raise InputError(f"the image is {height}×{width} but the mapping is for {mapping.original[0]}×{mapping.original[1]}")
    top, left, bottom, right = mapping.box()
    y0, x0 = max(0, round(top)), max(0, round(left))
    y1, x1 = min(height, max(y0 + 1, round(bottom))), min(width, max(x0 + 1, round(right)))
    out = (pixels.astype(np.float32) * dim + 0.5).astype(np.uint8)
    region = np.ascontiguousarray(pixels[y0:y1, x0:x1])
    out[y0:y1, x0:x1] = render.overlay(region[None], grid[None], alpha, colormap)[0]  # type: ignore[arg-type, index]
    return out
