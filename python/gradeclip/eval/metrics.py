"""Curve areas and localisation metrics (SPEC §7, §8), computed in Rust."""

from __future__ import annotations

from typing import Any

import numpy as np

from .. import native
from ..arrays import mask_list, plane_list, to_numpy
from ..errors import InputError

LOCALIZATION_METRICS = ("point_game", "energy_pg", "pixel_accuracy", "mask_iou", "average_precision")


def auc(curves: Any) -> float | np.ndarray:
    """Trapezoid area of a curve sampled at ``K ≥ 2`` points spaced uniformly on x ∈ [0, 1].

    Args:
        curves: one curve ``[K]`` or a batch ``[B, K]``.

    Returns:
        a float for one curve, float64 ``[B]`` for a batch.
    """
    array = np.asarray(to_numpy(curves, "curves"), dtype=np.float64)
    if array.ndim == 1:
        return float(native.curve_auc(np.ascontiguousarray(array[None]))[0])
    if array.ndim == 2:
        return native.curve_auc(np.ascontiguousarray(array))
    raise InputError(f"curves must be [K] or [B, K], got shape {array.shape}")


def localization_metrics(maps: Any, masks: Any) -> dict[str, np.ndarray]:
    """Point Game, energy-PG, pixel accuracy, mask IoU and average precision of each heat map
    against its binary mask (SPEC §8).

    Each map is min-max normalised first (a constant map becomes zeros); the foreground for pixel
    accuracy and IoU is ``h > mean(h)``; ties for the Point Game go to the first pixel in raster
    order; AP ranks all pixels as ``sklearn.metrics.average_precision_score`` does.

    Args:
        maps: heat maps already at mask resolution: ``[H, W]``, ``[B, H, W]`` or a list.
        masks: binary masks (bool, or integers with non-zero = object), same shapes; each must
            contain at least one object pixel.

    Returns:
        ``{name: float64 [B]}`` for the names in :data:`LOCALIZATION_METRICS`.
    """
    map_arrays = plane_list(maps, np.float32, "maps")
    mask_arrays = mask_list(masks)
    if len(map_arrays) != len(mask_arrays):
        raise InputError(f"got {len(map_arrays)} heat maps but {len(mask_arrays)} masks")
    table = native.localization_metrics(map_arrays, mask_arrays)
    return {name: table[:, i].copy() for i, name in enumerate(LOCALIZATION_METRICS)}
