"""How an image becomes a model input — the only module that knows.

- The model's geometry (:class:`Geometry`): square input side, per-channel mean and std, read one
  way for every model family, from the image tower's adapter
  (:attr:`~gradeclip.towers.base.ImageTower.preprocess_cfg`: open_clip's ``preprocess_cfg``, timm's
  ``pretrained_cfg``, OpenAI CLIP's normalisation for transformers CLIP/BLIP).
- Resize + centre crop, computed in Rust exactly as Pillow (:func:`resize_center_crop`,
  :func:`model_ready`; :func:`model_input` also returns where the crop lies in the original
  image, :class:`gradeclip.image_inputs.ImageMapping`); object masks through the same geometry
  (:func:`mask_in_geometry`). The Explainer's own image inputs (PIL images, arrays, paths) and
  overlays on the original are :mod:`gradeclip.image_inputs`, which reads the model's
  normalisation here (:func:`normalisation`).
- Native resolution (SPEC §4): :func:`native_size`, :func:`native_preprocess` (also in the
  authors' two-resize geometry, SPEC §12: :func:`authors_cap`, :func:`authors_size`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from . import native
from .arrays import image_list, triple
from .compat import resolve
from .errors import InputError
from .image_inputs import ImageMapping, shortest_side_mapping
from .towers.base import OPENAI_MEAN, OPENAI_STD, ImageTower
from .towers.registry import image_tower

__all__ = [
    "GEOMETRIES",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "Geometry",
    "authors_cap",
    "authors_size",
    "check_size",
    "mask_in_geometry",
    "model_input",
    "model_ready",
    "native_preprocess",
    "native_size",
    "normalisation",
    "resize_center_crop",
]


def normalisation(model: nn.Module | ImageTower) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` the model's inputs are normalised with, per channel on the 0..1 scale."""
    tower = model if isinstance(model, ImageTower) else image_tower(model)
    return tower.mean, tower.std


@dataclass(frozen=True)
class Geometry:
    """The model's evaluation preprocessing: square side ``size``, per-channel ``mean`` and ``std``
    (the shorter side resized to ``size`` bicubic, the centre crop, then ``(v/255 − mean) / std``)."""

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def of(cls, model: nn.Module) -> Geometry:
        """The geometry of any model the Explainer supports, from its image tower's adapter. Only
        the bicubic shortest-side resize + centre crop (every OpenAI / open_clip CLIP) is
        reproduced: a model declaring another resize, or a non-square input, is an :class:`InputError`."""
        tower = image_tower(model)
        height, width = tower.input_size
        if height != width:
            raise InputError(f"the model's input is not square ({height}×{width}); evaluation supports square inputs")
        cfg = tower.preprocess_cfg
        interpolation = cfg.get("interpolation", "bicubic")
        resize_mode = cfg.get("resize_mode", "shortest")
        if interpolation != "bicubic" or resize_mode != "shortest":
            raise InputError(
                f"the model preprocesses with interpolation={interpolation!r}, resize_mode={resize_mode!r}; "
                "evaluation reproduces only the bicubic shortest-side resize + centre crop"
            )
        return cls(height, tower.mean, tower.std)


def check_size(size: Any) -> int:
    """``size`` as an int, if it is a positive integer; else an :class:`InputError`."""
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise InputError(f"output size must be a positive integer, got {size!r}")
    return int(size)


def resize_center_crop(images: Any, size: int) -> np.ndarray:
    """CLIP's geometry without the normalisation: the shorter side resized to ``size`` (bicubic,
    antialiased, exactly Pillow's 8-bit resampler), then the centre ``size × size`` crop.

    Returns uint8 ``[B, size, size, 3]``.
    """
    return native.resize_center_crop(image_list(images), check_size(size))


def model_ready(images: Any, size: int, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """CLIP's evaluation preprocessing of uint8 images (what open_clip's transform gives for a PIL
    image): :func:`resize_center_crop`, then ``(v / 255 − mean) / std`` per channel.

    Returns float32 ``[B, 3, size, size]``.
    """
    return native.model_ready(image_list(images), check_size(size), triple(mean, "mean"), triple(std, "std"))


def model_input(image: np.ndarray, geometry: Geometry) -> tuple[Tensor, ImageMapping]:
    """One uint8 image ``[H, W, 3]`` as the model's input float32 ``[1, 3, S, S]`` (:func:`model_ready`),
    with where that input lies in the original image (resized size, crop offset, :meth:`~ImageMapping.box`)."""
    pixels = torch.from_numpy(model_ready(image, geometry.size, geometry.mean, geometry.std))
    height, width = image.shape[:2]
    return pixels, shortest_side_mapping(height, width, geometry.size)


def mask_in_geometry(mask: np.ndarray, size: int) -> np.ndarray:
    """A bool mask ``[H, W]`` taken through the model's geometry: nearest-neighbour resize of the
    shorter side to ``size`` and the centre crop, with torchvision's own size and offset rules.
    Returns bool ``[size, size]``."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    img = Image.fromarray(mask.astype(np.uint8) * 255)
    img = CenterCrop(size)(Resize(size, interpolation=InterpolationMode.NEAREST)(img))
    return np.asarray(img) > 127


def native_size(height: int, width: int, patch: tuple[int, int], max_short_side: int | None = None) -> tuple[int, int]:
    """The size ``(H', W')`` an image is resized to for native-resolution explanation: each side
    rounded to the nearest multiple of the patch (at least one patch), after scaling the shorter
    side down to ``max_short_side`` when it is longer."""
    if max_short_side is not None and min(height, width) > max_short_side:
        scale = max_short_side / min(height, width)
        height, width = height * scale, width * scale
    return (max(patch[0], round(height / patch[0]) * patch[0]), max(patch[1], round(width / patch[1]) * patch[1]))


def authors_cap(image: Image.Image, max_short_side: int = 640) -> Image.Image:
    """The image as the authors' scripts see it before anything else (SPEC §12): when its shorter
    side exceeds ``max_short_side``, resized (Pillow bicubic) to ``(int(w/s), int(h/s))`` with
    ``s = min(w, h) / max_short_side``; otherwise unchanged. Their heat maps, perturbations and
    scores are all on this image."""
    width, height = image.size
    if min(width, height) <= max_short_side:
        return image
    scale = min(width, height) / max_short_side
    return image.resize((int(width / scale), int(height / scale)), Image.Resampling.BICUBIC)


def authors_size(height: int, width: int, patch: tuple[int, int]) -> tuple[int, int]:
    """The authors' ``imgprocess_keepsize`` size: each side ``int(x/p + 0.5)·p`` (half-up), at least one patch."""
    return (max(patch[0], int(height / patch[0] + 0.5) * patch[0]), max(patch[1], int(width / patch[1] + 0.5) * patch[1]))


GEOMETRIES = ("gradeclip", "authors")


def native_preprocess(
    image: Image.Image | np.ndarray,
    model: nn.Module,
    max_short_side: int | None = None,
    geometry: str | None = None,
    compat: str | None = None,
) -> Tensor:
    """Prepare one image at (about) its own size and aspect ratio for ``model``'s image tower.

    The image is resized (bicubic, Pillow) to :func:`native_size` and normalised with the model's
    mean and std (:func:`normalisation`); the tower interpolates its positional embedding to the
    resulting patch grid.

    Args:
        image: a PIL image or a uint8 array ``[H, W, 3]``.
        model: the model whose patch size and normalisation apply.
        max_short_side: optional cap on the shorter side in pixels (the paper's authors used 640).
        geometry: ``"gradeclip"`` (default: one resize to :func:`native_size`) or ``"authors"``
            (their two resizes: :func:`authors_cap`, then :func:`authors_size`; SPEC §12).
        compat: ``"authors"`` sets ``geometry="authors"`` and ``max_short_side=640`` unless given.

    Returns:
        float32 tensor ``[3, H', W']``; stack several of the same size into a batch.
    """
    form = resolve(compat, "geometry", {"geometry": geometry, "max_short_side": max_short_side})
    if form["geometry"] not in GEOMETRIES:
        raise InputError(f"geometry={form['geometry']!r} is not one of {', '.join(map(repr, GEOMETRIES))}")
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"an array image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InputError(f"image must be a PIL image or a uint8 array, got {type(image).__name__}")
    tower = image_tower(model)
    image = image.convert("RGB")
    if form["geometry"] == "authors":
        if form["max_short_side"] is not None:
            image = authors_cap(image, form["max_short_side"])
        height, width = authors_size(image.height, image.width, tower.patch_size)
    else:
        height, width = native_size(image.height, image.width, tower.patch_size, form["max_short_side"])
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation(tower))
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std
