"""Straightforward numpy / Pillow references for the evaluation (SPEC §7, §8), for tests only.

Nothing here calls gradeclip's Rust code: the perturbation is numpy, the preprocessing is
Pillow + open_clip's transform, the metrics are numpy and scikit-learn.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

PCG_MULTIPLIER = 0x2360ED051FC65DA44385DF649FCCF645
MASK128 = (1 << 128) - 1


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


def localization(heat: np.ndarray, mask: np.ndarray) -> dict[str, float]:
    """SPEC §8 for one map and one mask, on the min-max normalised map."""
    from sklearn.metrics import average_precision_score

    heat = heat.astype(np.float64)
    lo, hi = heat.min(), heat.max()
    h = (heat - lo) / (hi - lo) if hi > lo else np.zeros_like(heat)
    m = mask.astype(bool)
    fg = h > h.mean()
    total = h.sum()
    return {
        "point_game": float(m.ravel()[np.argmax(h.ravel())]),
        "energy_pg": float(h[m].sum() / total) if total > 0 else 0.0,
        "pixel_accuracy": float((fg == m).mean()),
        "mask_iou": float((fg & m).sum() / (fg | m).sum()),
        "average_precision": float(average_precision_score(m.ravel(), h.ravel())),
    }
