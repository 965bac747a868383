"""Straightforward numpy / Pillow references for the evaluation (SPEC §7, §8), for tests only.

Nothing here calls gradeclip's Rust code: the perturbation is numpy, the preprocessing is
Pillow + open_clip's transform, the metrics are numpy and scikit-learn.

Discrete outcomes (a hit, a point-game pixel, a foreground pixel) of floats that the code under
test computes another way (other batch shapes, summation order, CPU kernels) are given with their
margin: :func:`hit_at` says None and :func:`localization_bounds` gives a range where float noise
could decide either way, so that a test asserts an outcome only where it is decided.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
MASK128 = (1 << 128) - 1
#: Cosines of unit float32 embeddings of the same inputs computed with other batch shapes, thread
#: counts or CPU kernels differ by about 1e-7 (tiny test models); a hit, a rank or a top-k of such
#: cosines is decided only where its margin is wider than this.
MARGIN = 1e-5


def fill_bytes(seed: int, stream: int, count: int) -> np.ndarray:
    """The documented deletion fill: ``count`` bytes of numpy's PCG64 started where
    ``rand_pcg::Pcg64::new(seed, stream)`` starts (increment ``2·stream + 1``, state advanced once)."""
    inc = (2 * stream + 1) & MASK128
    state = (((seed + inc) & MASK128) * PCG_MULTIPLIER + inc) & MASK128
    bg = np.random.PCG64()
    bg.state = {"bit_generator": "PCG64", "state": {"state": state, "inc": inc}, "has_uint32": 0, "uinteger": 0}
    words = bg.random_raw((count + 7) // 8).astype("<u8")
    return words.view(np.uint8)[:count]


def checkpoints(
    image: np.ndarray, heat: np.ndarray, mode: str, steps: int = 100, eval_every: int = 10, seed: int = 0, stream: int = 0
) -> np.ndarray:
    """SPEC §7 step by step: uint8 ``[1 + steps / eval_every, H, W, 3]``.

    Deletion fill (the documented convention): at each checkpoint, the pixels removed since the
    previous one take the next bytes of :func:`fill_bytes`, three each, in raster order.
    """
    h, w, _ = image.shape
    n = max(1, h * w // (2 * steps))
    order = np.argsort(-heat.astype(np.float64).ravel(), kind="stable")
    source = image.reshape(-1, 3)
    current = source.copy() if mode == "deletion" else np.zeros_like(source)
    fill = fill_bytes(seed, stream, 3 * min(steps * n, h * w)).reshape(-1, 3)
    used = 0
    pending = np.zeros(h * w, bool)
    out = [current.reshape(h, w, 3).copy()]
    for step in range(steps):
        pixels = order[step * n : (step + 1) * n]
        pending[pixels] = True
        if mode == "insertion":
            current[pixels] = source[pixels]
        if (step + 1) % eval_every == 0:
            if mode == "deletion":
                fresh = np.flatnonzero(pending)
                current[fresh] = fill[used : used + len(fresh)]
                used += len(fresh)
            pending[:] = False
            out.append(current.reshape(h, w, 3).copy())
    return np.stack(out)


def pillow_model_input(image: np.ndarray, preprocess) -> np.ndarray:
    """open_clip's preprocess of one uint8 image through PIL: float32 ``[3, S, S]``."""
    return preprocess(Image.fromarray(image)).numpy()


def pillow_geometry(image: np.ndarray, size: int) -> np.ndarray:
    """torchvision's Resize(size, bicubic) + CenterCrop(size) on a PIL image, as uint8 ``[S, S, 3]``."""
    from torchvision.transforms import CenterCrop, InterpolationMode, Resize

    img = Resize(size, interpolation=InterpolationMode.BICUBIC)(Image.fromarray(image))
    return np.asarray(CenterCrop(size)(img))


def trapezoid_auc(curve: np.ndarray) -> float:
    """Area under ``curve`` with x uniform on [0, 1]."""
    curve = np.asarray(curve, dtype=np.float64)
    dx = 1.0 / (len(curve) - 1)
    return float(np.sum((curve[1:] + curve[:-1]) * dx / 2))


def hit_at(own: float, competitors: np.ndarray, k: int, margin: float = MARGIN) -> bool | None:
    """Whether fewer than ``k`` competitors score strictly above ``own`` (ties count as a hit, as
    in the harness); None (a near-tie) when the k-th highest competitor is within ``margin`` of
    ``own``, so that float noise in either score could decide it."""
    ranked = np.sort(np.asarray(competitors, dtype=np.float64))[::-1]
    if len(ranked) < k:
        return True
    if abs(ranked[k - 1] - own) <= margin:
        return None
    return bool(ranked[k - 1] < own)


def localization_bounds(heat: np.ndarray, mask: np.ndarray, margin: float = 1e-12) -> dict[str, tuple[float, float]]:
    """SPEC §8 for one map and one mask, on the min-max normalised map (float64): ``(low, high)``
    per metric, equal unless a discrete step is within ``margin`` of a float computed another way.

    A pixel within ``margin`` of the map's mean may fall on either side of ``h > mean``, so pixel
    accuracy and mask IoU get the range over every such choice; a pixel within ``margin`` of the
    maximum but not equal to it may be the point-game pixel (exact ties go to the first pixel in
    raster order, as in the Rust code, since both normalise the same float32 map the same way).
    Energy-PG and AP are continuous: low = high.
    """
    from sklearn.metrics import average_precision_score

    heat = heat.astype(np.float64)
    lo, hi = heat.min(), heat.max()
    h = ((heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)).ravel()
    m = mask.astype(bool).ravel()
    # a constant map's mean is exactly 0 in any summation order: no pixel is near it
    near = np.abs(h - h.mean()) <= margin if hi > lo else np.zeros(h.shape, bool)
    fg = (h > h.mean()) & ~near  # near pixels counted as background; each may flip
    near_in, near_out = int((near & m).sum()), int((near & ~m).sum())
    matches = int((fg == m).sum())
    tp, union = int((fg & m).sum()), int((fg | m).sum())
    best = int(np.argmax(h))
    candidates = (np.abs(h - h[best]) <= margin) & (h != h[best])
    candidates[best] = True
    total = h.sum()
    energy = float(h[m].sum() / total) if total > 0 else 0.0
    ap = float(average_precision_score(m, h))
    return {
        "point_game": (float(m[candidates].min()), float(m[candidates].max())),
        "energy_pg": (energy, energy),
        "pixel_accuracy": ((matches - near_out) / h.size, (matches + near_in) / h.size),
        "mask_iou": (tp / (union + near_out), (tp + near_in) / union),
        "average_precision": (ap, ap),
    }


def within(value: float, bounds: tuple[float, float], rel: float = 1e-9, abs_tol: float = 1e-12) -> bool:
    """Whether ``value`` lies in ``bounds`` (from :func:`localization_bounds`) up to rounding."""
    low, high = bounds
    slack = rel * max(abs(low), abs(high)) + abs_tol
    return low - slack <= value <= high + slack
