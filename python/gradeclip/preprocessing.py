"""How an image becomes a model input — the only module that knows.

- The model's geometry (:class:`Geometry`): square input side, per-channel mean and std, read one
  way for every model family, from the image tower's adapter
  (:attr:`~gradeclip.towers.base.ImageTower.preprocess_cfg`: open_clip's ``preprocess_cfg``, timm's
  ``pretrained_cfg``, OpenAI CLIP's normalisation for transformers CLIP/BLIP).
- Resize + centre crop (:func:`crop_mapping` says where the crop lies in the original image; the
  pixels themselves are computed in Rust, exactly as Pillow, by
  :func:`gradeclip.eval.resize_center_crop` / :func:`gradeclip.eval.model_ready`); object masks
  through the same geometry (:func:`mask_in_geometry`).
- Native resolution (SPEC §4): :func:`native_size`, :func:`native_preprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .errors import InputError
from .towers.base import OPENAI_MEAN, OPENAI_STD, ImageTower
from .towers.registry import image_tower

__all__ = [
    "OPENAI_MEAN",
    "OPENAI_STD",
    "CropMapping",
    "Geometry",
    "crop_mapping",
    "mask_in_geometry",
    "native_preprocess",
    "native_size",
    "normalisation",
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


@dataclass(frozen=True)
class CropMapping:
    """Where a model input of :class:`Geometry` lies in the original image.

    The original ``(H, W)`` is resized to ``resized`` ``(h, w)`` (shorter side = ``size``, the
    longer ``int(size · long / short)``, torchvision's rule), then the ``size × size`` window at
    ``offset`` ``(top, left)`` of the resized image is kept (torchvision's centre-crop rounding).
    Input pixel ``(y, x)`` (pixel centres at ``+0.5``) is original point
    ``((y + top + 0.5) / scale[0] − 0.5, (x + left + 0.5) / scale[1] − 0.5)``.
    """

    original: tuple[int, int]
    resized: tuple[int, int]
    offset: tuple[int, int]
    size: int

    @property
    def scale(self) -> tuple[float, float]:
        """``(resized height / original height, resized width / original width)``."""
        return (self.resized[0] / self.original[0], self.resized[1] / self.original[1])

    def box(self) -> tuple[float, float, float, float]:
        """The crop window in original pixel coordinates: ``(top, left, bottom, right)`` (edges, float)."""
        sy, sx = self.scale
        top, left = self.offset
        return (top / sy, left / sx, (top + self.size) / sy, (left + self.size) / sx)


def _center_offset(full: int, size: int) -> int:
    return int(round((full - size) / 2.0))  # torchvision's CenterCrop (Python's half-to-even round)


def crop_mapping(height: int, width: int, size: int) -> CropMapping:
    """How an image of ``height × width`` maps onto the ``size × size`` resize + centre crop input
    (the same sizes and offsets the Rust path and torchvision use)."""
    for name, value in (("height", height), ("width", width), ("size", size)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    short, long = min(height, width), max(height, width)
    new_long = int(size * long / short)
    resized = (new_long, size) if width <= height else (size, new_long)
    return CropMapping((int(height), int(width)), resized, (_center_offset(resized[0], size), _center_offset(resized[1], size)), int(size))


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


def native_preprocess(image: Image.Image | np.ndarray, model: nn.Module, max_short_side: int | None = None) -> Tensor:
    """Prepare one image at (about) its own size and aspect ratio for ``model``'s image tower.

    The image is resized (bicubic, Pillow) to :func:`native_size` and normalised with the model's
    mean and std (:func:`normalisation`); the tower interpolates its positional embedding to the
    resulting patch grid.

    Args:
        image: a PIL image or a uint8 array ``[H, W, 3]``.
        model: the model whose patch size and normalisation apply.
        max_short_side: optional cap on the shorter side in pixels (the paper's authors used 640).

    Returns:
        float32 tensor ``[3, H', W']``; stack several of the same size into a batch.
    """
    if isinstance(image, np.ndarray):
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise InputError(f"an array image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
        image = Image.fromarray(image)
    if not isinstance(image, Image.Image):
        raise InputError(f"image must be a PIL image or a uint8 array, got {type(image).__name__}")
    tower = image_tower(model)
    height, width = native_size(image.height, image.width, tower.patch_size, max_short_side)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    mean, std = (torch.tensor(v).view(3, 1, 1) for v in normalisation(tower))
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std
