"""What the three analyses share: the model's view of an image, maps scored against masks, and
the text-explanation depth a tower allows."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from ..eval.metrics import localization_metrics
from ..explainer import Explainer, default_text_layers
from ..preprocessing import OPENAI_MEAN, OPENAI_STD
from ..render import overlay, upsample

TEXT_LAYERS = 8  # SPEC §3's default depth, capped at the text tower's


def text_layers(explainer: Explainer, n_layers: int | None) -> int:
    """``n_layers``, or SPEC §3's default 8 capped at the text tower's depth when None."""
    return min(TEXT_LAYERS, len(explainer.text_tower.blocks)) if n_layers is None else n_layers


def seen_pixels(explainer: Explainer, images: Tensor) -> np.ndarray:
    """uint8 RGB ``[B, H, W, 3]``: preprocessed images ``[B, 3, H, W]`` with the model's
    normalisation undone (the image as the model saw it, crop included)."""
    from open_clip import get_model_preprocess_cfg

    cfg = get_model_preprocess_cfg(explainer.model)
    mean = torch.tensor(cfg.get("mean", OPENAI_MEAN)).view(1, 3, 1, 1)
    std = torch.tensor(cfg.get("std", OPENAI_STD)).view(1, 3, 1, 1)
    values = (images.detach().float().cpu() * std + mean) * 255
    return np.ascontiguousarray(values.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy())


def localise(maps: np.ndarray, masks: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Point Game hits and energy-PG (SPEC §8) of raw grid maps ``[n, h, w]`` against binary masks
    (one ``[H, W]`` per map; each map is upsampled to its mask's size first). Returns two float64 ``[n]``."""
    sizes = [m.shape for m in masks]
    up = upsample(list(np.asarray(maps, dtype=np.float32)), sizes)
    scores = localization_metrics(up, list(masks))
    return scores["point_game"], scores["energy_pg"]


def overlays(pixels: np.ndarray, maps: np.ndarray) -> np.ndarray:
    """uint8 overlays (SPEC §9, jet, α = 0.5) of raw maps ``[n, h, w]`` on one image ``[H, W, 3]``."""
    return np.asarray(overlay(np.repeat(pixels[None], len(maps), axis=0), np.asarray(maps, dtype=np.float32)))

