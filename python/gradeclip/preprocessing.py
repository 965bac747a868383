"""How an image becomes a model input — the only module that knows.

- The model's geometry as the Explainer's image inputs take it (:func:`input_geometry`,
  :class:`ImageGeometry`: input size, resize mode — the shorter side + centre crop, or squashed for
  BLIP and non-square open_clip inputs — mean and std), how one image maps to the input
  (:class:`ImageMapping`, :func:`shortest_side_mapping`, :func:`geometry_mapping`), and a model's
  whole preparation held without the model (:class:`InputPreparation`: model or native resolution;
  picklable, for DataLoader workers).
- Evaluation's geometry (:class:`Geometry`): square input side, per-channel mean and std, read one
  way for every model family, from the image tower's adapter
  (:attr:`~gradeclip.towers.base.ImageTower.preprocess_cfg`: open_clip's ``preprocess_cfg``, timm's
  ``pretrained_cfg``, OpenAI CLIP's normalisation for transformers CLIP/BLIP).
- Resize + centre crop, computed in Rust exactly as Pillow (:func:`resize_center_crop`,
  :func:`model_ready`; :func:`model_input` also returns where the crop lies in the original
  image, :class:`ImageMapping`); object masks through the same geometry
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
from .errors import InputError, UnsupportedModelError
from .towers.base import OPENAI_MEAN, OPENAI_STD, ImageTower
from .towers.registry import image_tower

RESOLUTIONS = ("model", "native")

__all__ = [
    "GEOMETRIES",
    "RESOLUTIONS",
    "ImageGeometry",
    "ImageMapping",
    "InputPreparation",
    "OPENAI_MEAN",
    "OPENAI_STD",
    "Geometry",
    "authors_cap",
    "authors_size",
    "check_size",
    "geometry_mapping",
    "input_geometry",
    "mask_in_geometry",
    "model_input",
    "model_ready",
    "native_preprocess",
    "native_size",
    "normalisation",
    "resize_center_crop",
    "shortest_side_mapping",
]


def normalisation(model: nn.Module | ImageTower) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """``(mean, std)`` the model's inputs are normalised with, per channel on the 0..1 scale."""
    tower = model if isinstance(model, ImageTower) else image_tower(model)
    return tower.mean, tower.std


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


def _size_pair(size: Any) -> tuple[int, int]:
    if isinstance(size, int):
        return (size, size)
    height, width = size
    return (int(height), int(width))


def input_geometry(model: nn.Module) -> ImageGeometry:
    """The model's own preprocessing (see the module docstring). Raises
    :class:`UnsupportedModelError` for a resize gradeclip does not reproduce (open_clip's
    ``resize_mode="longest"``, which pads)."""

    tower = image_tower(model)
    mean, std = normalisation(tower)  # one way for every family: the tower adapter's preprocess_cfg
    library = type(model).__module__.split(".")[0]
    if library == "transformers":
        resize = "squash" if type(model).__name__.startswith("Blip") else "shortest"
        return ImageGeometry(tower.input_size, resize, mean, std)
    if library == "timm":
        cfg = getattr(model, "pretrained_cfg", {}) or {}
        size = _size_pair(cfg.get("input_size", (3, *tower.input_size))[1:])
        return ImageGeometry(size, "shortest", mean, std)
    cfg = tower.preprocess_cfg
    size = _size_pair(cfg.get("size", getattr(getattr(model, "visual", None), "image_size", None) or tower.input_size))
    resize = cfg.get("resize_mode", "shortest")
    if resize not in ("shortest", "squash"):
        raise UnsupportedModelError(f"{type(model).__name__} preprocesses with resize_mode={resize!r} (padding); gradeclip reproduces 'shortest' and 'squash'")
    if resize == "shortest" and size[0] != size[1]:
        resize = "squash"  # open_clip squashes to a non-square input
    return ImageGeometry(size, resize, mean, std)


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


@dataclass(frozen=True)
class InputPreparation:
    """How images become one model's inputs, held without the model (picklable: DataLoader workers
    use it as their preprocess). Make one with :meth:`of`.

    Attributes:
        geometry: the model's own preprocessing (:func:`input_geometry`).
        resolution: ``"model"`` or ``"native"`` (see the module docstring).
        patch: the image tower's patch size (``"native"`` sides are its multiples).
        max_short_side: with ``"native"``, the cap on the shorter side, or None.
    """

    geometry: ImageGeometry
    resolution: str
    patch: tuple[int, int]
    max_short_side: int | None

    @classmethod
    def of(cls, model: nn.Module, resolution: str = "model", max_short_side: int | None = None) -> InputPreparation:
        """``model``'s preparation; :class:`InputError` for an unknown ``resolution`` or a
        ``max_short_side`` that is not a positive integer."""
        if resolution not in RESOLUTIONS:
            raise InputError(f"resolution must be one of {', '.join(map(repr, RESOLUTIONS))}, got {resolution!r}")
        if max_short_side is not None and (isinstance(max_short_side, bool) or not isinstance(max_short_side, int) or max_short_side < 1):
            raise InputError(f"max_short_side must be a positive integer, got {max_short_side!r}")
        patch = image_tower(model).patch_size if resolution == "native" else (1, 1)
        return cls(input_geometry(model), resolution, patch, max_short_side)

    def mapping(self, height: int, width: int) -> ImageMapping:
        """How an image of ``height × width`` is mapped to the model input."""
        if self.resolution == "native":
            resized = native_size(height, width, self.patch, self.max_short_side)
            return ImageMapping((height, width), resized, (0, 0), resized)
        return geometry_mapping(self.geometry, height, width)

    def resize(self, pixels: np.ndarray) -> tuple[np.ndarray, ImageMapping]:
        """One image uint8 ``[H, W, 3]`` resized (bicubic, Pillow) and cropped to the model input:
        uint8 ``[h, w, 3]``, and its :class:`ImageMapping`."""
        mapping = self.mapping(*pixels.shape[:2])
        image = Image.fromarray(pixels).resize((mapping.resized[1], mapping.resized[0]), Image.Resampling.BICUBIC)
        top, left = mapping.offset
        out = np.asarray(image.crop((left, top, left + mapping.input_size[1], top + mapping.input_size[0])))
        return out, mapping

    def normalise(self, resized: np.ndarray) -> Tensor:
        """Resized uint8 inputs ``[B, h, w, 3]`` as float32 ``[B, 3, h, w]``, ``(v/255 − mean) / std``."""
        mean = torch.tensor(self.geometry.mean, dtype=torch.float32).view(1, 3, 1, 1)
        std = torch.tensor(self.geometry.std, dtype=torch.float32).view(1, 3, 1, 1)
        x = torch.tensor(resized).permute(0, 3, 1, 2).float() / 255.0
        return (x - mean) / std

    def __call__(self, image: Image.Image) -> Tensor:
        """One PIL image as the model input float32 ``[3, h, w]`` (a model's ``preprocess``)."""
        return self.normalise(self.resize(np.asarray(image.convert("RGB")))[0][None])[0]


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
