"""Input preparation for ``resolution="native"`` (SPEC §4)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import Tensor, nn

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


def native_preprocess(image: Image.Image | np.ndarray, model: nn.Module, max_short_side: int | None = None) -> Tensor:
    """Prepare one image at (about) its own size and aspect ratio for ``model``'s image tower.

    The image is resized (bicubic, Pillow) to :func:`native_size` and normalised with the model's
    mean and std; the tower interpolates its positional embedding to the resulting patch grid.

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
    patch = image_tower(model).patch_size  # type: ignore[attr-defined]
    height, width = native_size(image.height, image.width, patch, max_short_side)
    resized = image.convert("RGB").resize((width, height), Image.Resampling.BICUBIC)
    from open_clip import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(model)
    mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_STD)).view(3, 1, 1)
    pixels = torch.from_numpy(np.asarray(resized, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (pixels - mean) / std
