"""Images as people have them — PIL images, uint8 arrays, file paths — turned into model inputs, with
a record of how each was mapped, so that a map can be drawn back over the original photo.

- :func:`input_geometry`: the model's own preprocessing (input size, resize mode, mean and std),
  read from the model: open_clip's ``preprocess_cfg``, a timm classifier's ``pretrained_cfg``,
  transformers CLIP (shorter side + centre crop) and BLIP (squashed to the square), OpenAI CLIP's
  normalisation where the model declares none.
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
import torch
from PIL import Image
from torch import Tensor, nn

from .errors import InputError, UnsupportedModelError

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
RESOLUTIONS = ("model", "native")
DIM = 0.35  # brightness kept where the model's crop cut the original away
ImageLike = Any  # PIL image, uint8 array [H, W, 3] / [H, W], or a path


@dataclass(frozen=True)
class ImageGeometry:
    """A model's input preprocessing.

    Attributes:
        size: the input ``(H, W)`` in pixels.
        resize: ``"shortest"`` (shorter side to the input size, then the centre crop) or
            ``"squash"`` (both sides to the input size).
        mean, std: per-channel normalisation, on the 0..1 scale.
    """

    size: tuple[int, int]
    resize: str
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


@dataclass(frozen=True)
class ImageMapping:
    """How one original image became the model input.

    The original ``(H, W)`` was resized to ``resized`` ``(h, w)``; the model input is the window of
    ``input_size`` at ``offset`` ``(top, left)`` of the resized image (``(0, 0)`` and the whole
    image when nothing was cropped).
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    input_size: tuple[int, int]

    def box(self) -> tuple[float, float, float, float]:
        """The model input's window in original pixel coordinates: ``(top, left, bottom, right)``
        (edges, float; the whole image when nothing was cropped)."""
        sy, sx = self.resized[0] / self.original[0], self.resized[1] / self.original[1]
        top, left = self.offset
        return (top / sy, left / sx, (top + self.input_size[0]) / sy, (left + self.input_size[1]) / sx)


@dataclass(frozen=True)
class ImageInput:
    """An explained image as it was given: ``pixels`` uint8 RGB ``[H, W, 3]`` and its ``mapping``."""

    pixels: np.ndarray
    mapping: ImageMapping


def _size_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def input_geometry(model: nn.Module) -> ImageGeometry:
    """The model's own preprocessing (see the module docstring). Raises
    :class:`UnsupportedModelError` for a resize gradeclip does not reproduce (open_clip's
    ``resize_mode="longest"``, which pads)."""
    from .towers.registry import image_tower

    library = type(model).__module__.split(".")[0]
    if library == "transformers":
        tower = image_tower(model)
        resize = "squash" if type(model).__name__.startswith("Blip") else "shortest"
        return ImageGeometry(tower.input_size, resize, OPENAI_MEAN, OPENAI_STD)
    if library == "timm":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = _size_pair(cfg.get("input_size", (3, *image_tower(model).input_size))[1:])
        return ImageGeometry(size, "shortest", tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)))  # type: ignore[arg-type]
    from open_clip import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    size = _size_pair(cfg.get("size", getattr(getattr(model, "visual", None), "image_size", None) or image_tower(model).input_size))
    resize = cfg.get("resize_mode", "shortest")
    if resize not in ("shortest", "squash"):
        raise UnsupportedModelError(f"{type(model).__name__} preprocesses with resize_mode={resize!r} (padding); gradeclip reproduces 'shortest' and 'squash'")
    if resize == "shortest" and size[0] != size[1]:
        resize = "squash"  # open_clip squashes to a non-square input
    return ImageGeometry(size, resize, tuple(cfg.get("mean", OPENAI_MEAN)), tuple(cfg.get("std", OPENAI_STD)))  # type: ignore[arg-type]


def shortest_side_mapping(height: int, width: int, size: int) -> ImageMapping:
    """The shorter side resized to ``size`` (the longer to ``int(size · long / short)``), then the
    centre ``size × size`` kept (offsets rounded as torchvision's ``CenterCrop``)."""
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    resized = (new_long, size) if width <= height else (size, new_long)
    offset = (int(round((resized[0] - size) / 2.0)), int(round((resized[1] - size) / 2.0)))
    return ImageMapping((height, width), resized, offset, (size, size))


def geometry_mapping(geometry: ImageGeometry, height: int, width: int) -> ImageMapping:
    """How the model's own preprocessing (``geometry``) maps an image of ``height × width``."""
    if geometry.resize == "squash":
        return ImageMapping((height, width), geometry.size, (0, 0), geometry.size)
    return shortest_side_mapping(height, width, geometry.size[0])


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


def _map_image(pixels: np.ndarray, geometry: ImageGeometry, resolution: str, patch: tuple[int, int], max_short_side: int | None) -> tuple[np.ndarray, ImageMapping]:
    """The resized (and cropped) uint8 input of one image and its mapping."""
    from .preprocessing import native_size

    height, width = pixels.shape[:2]
    if resolution == "native":
        resized = native_size(height, width, patch, max_short_side)
        mapping = ImageMapping((height, width), resized, (0, 0), resized)
    else:
        mapping = geometry_mapping(geometry, height, width)
    image = Image.fromarray(pixels).resize((mapping.resized[1], mapping.resized[0]), Image.Resampling.BICUBIC)
    top, left = mapping.offset
    out = np.asarray(image.crop((left, top, left + mapping.input_size[1], top + mapping.input_size[0])))
    return out, mapping


def prepare_images(
    images: ImageLike | Sequence[ImageLike], model: nn.Module, resolution: str = "model", max_short_side: int | None = None
) -> tuple[Tensor, list[ImageInput]]:
    """Preprocess images for ``model`` as its own preprocessing does (or at native resolution).

    Args:
        images: one image or a list (PIL images, uint8 arrays ``[H, W, 3]`` / ``[H, W]``, paths).
        model: the model (its :func:`input_geometry` and, for ``"native"``, its patch size).
        resolution: ``"model"`` (the model's input size) or ``"native"`` (about the image's own size,
            sides rounded to patch multiples; all images must come out the same size to share a batch).
        max_short_side: with ``"native"``, cap the shorter side at this many pixels.

    Returns:
        float32 ``[B, 3, H, W]`` (CPU) and one :class:`ImageInput` per image.
    """
    from .towers.registry import image_tower

    if resolution not in RESOLUTIONS:
        raise InputError(f"resolution must be one of {', '.join(map(repr, RESOLUTIONS))}, got {resolution!r}")
    if max_short_side is not None and (isinstance(max_short_side, bool) or not isinstance(max_short_side, int) or max_short_side < 1):
        raise InputError(f"max_short_side must be a positive integer, got {max_short_side!r}")
    items = [images] if isinstance(images, (Image.Image, np.ndarray, str, os.PathLike)) else list(images)
    if not items:
        raise InputError("images is empty: give at least one image")
    geometry = input_geometry(model)
    patch = image_tower(model).patch_size if resolution == "native" else (1, 1)
    inputs, batch = [], []
    for i, item in enumerate(items):
        pixels = as_pixels(item, f"images[{i}]")
        resized, mapping = _map_image(pixels, geometry, resolution, patch, max_short_side)
        inputs.append(ImageInput(pixels, mapping))
        batch.append(resized)
    sizes = sorted({b.shape[:2] for b in batch})
    if len(sizes) > 1:
        raise InputError(f"at native resolution the images come out at different sizes {sizes}; explain them one at a time")
    mean = torch.tensor(geometry.mean, dtype=torch.float32).view(1, 3, 1, 1)
    std = torch.tensor(geometry.std, dtype=torch.float32).view(1, 3, 1, 1)
    x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float() / 255.0
    return (x - mean) / std, inputs


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
