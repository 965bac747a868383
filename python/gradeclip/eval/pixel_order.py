"""The order in which deletion / insertion changes pixels (SPEC §7, §12).

``"stable"`` (gradeclip's): heat descending, ties in raster order. ``"argsort"`` (the authors'
``imagenet_eval_deletion.py``): ``np.argsort(-heat.reshape(-1))`` with NumPy's default sort
(introsort, not stable) of the heat map min-max normalised in float32, so tied pixels come in
the order NumPy's sort leaves them. The perturbation itself (Rust) always walks pixels in the
stable order of the map it is given; :func:`ordered_heat` turns a heat map into one whose stable
order is the requested order.
"""

from __future__ import annotations

import numpy as np

from ..errors import InputError

PIXEL_ORDERS = ("stable", "argsort")


def ordered_heat(heat: np.ndarray, pixel_order: str = "stable") -> np.ndarray:
    """A map whose stable descending order (ties in raster order) is ``pixel_order``'s order of ``heat``.

    ``heat``: a float ``[H, W]`` map. ``"stable"`` returns it unchanged; ``"argsort"`` returns
    float64 ranks ``[H, W]``: the pixel ``np.argsort(-normalised)`` puts first gets ``H·W``, the
    last gets 1 (all distinct, so no ties are left to break).
    """
    if pixel_order not in PIXEL_ORDERS:
        raise InputError(f"pixel_order={pixel_order!r} is not one of {', '.join(map(repr, PIXEL_ORDERS))}")
    if pixel_order == "stable":
        return heat
    values = np.asarray(heat, dtype=np.float32)
    low, high = values.min(), values.max()
    normalised = (values - low) / (high - low) if high > low else np.zeros_like(values)  # as the authors' `emap -= min; emap /= max`
    order = np.argsort(-normalised.reshape(-1))
    ranks = np.empty(order.size, dtype=np.float64)
    ranks[order] = np.arange(order.size, 0, -1, dtype=np.float64)
    return ranks.reshape(values.shape)
