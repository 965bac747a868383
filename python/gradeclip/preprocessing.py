"""Input preparation for ``resolution="native"`` (SPEC §4)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

from .compat import resolve
from .errors import InputError
from .towers.registry import image_tower

OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)


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
    mean and std; the tower interpolates its positional embedding to the resulting patch grid.

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
    patch = image_tower(model).patch_size  # type: ignore[attr-defined]
    image = image.convert("RGB")
    if form["geometry"] == "authors":
        if form["max_short_side"] is not None:
            image = authors_cap(image, form["max_short_side"])
        height, width = authors_size(image.height, image.width, patch)
    else:
        height, width = native_size(image.height, image.width, patch, form["max_short_side"])
    resized = image.resize((width, height), Image.Resampling.BICUBIC)
    from open_clip import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_STD)).view(3, 1, 1)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std
