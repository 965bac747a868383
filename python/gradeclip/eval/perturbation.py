"""Deletion and insertion checkpoints (SPEC §7), computed in Rust; word deletion / insertion of
captions (paper Table III). CLIP's preprocessing of the checkpoints is
:mod:`gradeclip.preprocessing`'s (:func:`~gradeclip.preprocessing.model_ready`).

The image functions are a thin layer over :mod:`gradeclip.native`: inputs are checked and
converted, the work runs in parallel over images with the GIL released.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import native
from ..arrays import image_list, plane_list, triple
from ..errors import InputError
from ..preprocessing import check_size

MODES = ("deletion", "insertion")


def check_modes(modes: Sequence[str]) -> list[str]:
    """``modes`` as a list, if it holds distinct values of :data:`MODES`; else an :class:`InputError`."""
    modes = list(modes)
    if not modes or any(m not in MODES for m in modes) or len(set(modes)) != len(modes):
        raise InputError(f"modes must be distinct values of {', '.join(MODES)}, got {modes!r}")
    return modes


def checkpoint_fractions(steps: int = 100, eval_every: int = 10) -> np.ndarray:
    """Nominal fraction of pixels changed at each checkpoint: ``k · eval_every / (2 · steps)``,
    i.e. ``0, 0.05, …, 0.5`` for the defaults (float64 ``[1 + steps / eval_every]``)."""
    _check_schedule(steps, eval_every)
    return np.arange(steps // eval_every + 1) * eval_every / (2.0 * steps)


def _check_schedule(steps: int, eval_every: int) -> None:
    for name, value in (("steps", steps), ("eval_every", eval_every)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InputError(f"{name} must be a positive integer, got {value!r}")
    if steps % eval_every:
        raise InputError(f"eval_every={eval_every} must divide steps={steps}")


def perturbation_steps(
    images: Any,
    maps: Any,
    mode: str = "deletion",
    steps: int = 100,
    eval_every: int = 10,
    seed: int = 0,
    *,
    output_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    streams: Sequence[int] | None = None,
) -> list[np.ndarray] | np.ndarray:
    """Deletion or insertion checkpoint images of each image, ordered by its heat map (SPEC §7).

    Pixels are ranked by heat (descending; ties in raster order); each of the ``steps`` steps
    changes ``max(1, H·W // (2·steps))`` pixels; checkpoint ``k`` is the image after
    ``k · eval_every`` steps, checkpoint 0 the untouched start (the image for deletion, all
    zeros for insertion). Deletion fills each removed pixel with three random bytes from the
    seeded stream ``streams[i]`` of image ``i`` (see ``docs/evaluation.md``: numpy's ``PCG64``
    reproduces it).

    Args:
        images: uint8 ``[H, W, 3]``, a batch ``[B, H, W, 3]`` or a list (sizes may differ).
        maps: heat maps at each image's size: ``[H, W]``, ``[B, H, W]`` or a list (float; NaN or
            infinite values are an error).
        mode: ``"deletion"`` or ``"insertion"``.
        steps, eval_every: the schedule; ``eval_every`` must divide ``steps``.
        seed: seed of the deletion fill.
        output_size: when given, return instead each checkpoint as the model sees it: CLIP's
            preprocessing (shorter side resized to ``S`` bicubic like Pillow, centre crop,
            ``(v/255 − mean) / std``); needs ``mean`` and ``std``.
        streams: fill stream of each image (default ``0, 1, …``): give dataset indices so an
            image's fill does not depend on how a dataset was chunked.

    Returns:
        Without ``output_size``: a list of uint8 ``[K, H, W, 3]``, one per image, with
        ``K = 1 + steps / eval_every``. With it: one float32 array ``[B, K, 3, S, S]``.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    _check_schedule(steps, eval_every)
    image_arrays = image_list(images)
    map_arrays = plane_list(maps, np.float32, "maps")
    if len(image_arrays) != len(map_arrays):
        raise InputError(f"got {len(image_arrays)} images but {len(map_arrays)} heat maps")
    streams = list(range(len(image_arrays))) if streams is None else [int(s) for s in streams]
    if len(streams) != len(image_arrays):
        raise InputError(f"got {len(image_arrays)} images but {len(streams)} fill streams")
    if not 0 <= int(seed) < 2**64 or any(not 0 <= s < 2**64 for s in streams):
        raise InputError("seed and streams must be integers in [0, 2**64)")
    if output_size is None:
        if mean is not None or std is not None:
            raise InputError("mean and std only apply with output_size")
        return native.perturbation_checkpoints(image_arrays, map_arrays, mode, steps, eval_every, int(seed), streams)
    if mean is None or std is None:
        raise InputError("output_size needs the model's mean and std")
    return native.perturbation_batch(
        image_arrays,
        map_arrays,
        mode,
        steps,
        eval_every,
        int(seed),
        streams,
        check_size(output_size),
        triple(mean, "mean"),
        triple(std, "std"),
    )


def text_steps(
    text: str, spans: Sequence[tuple[int, int]], importance: Sequence[float], mode: str = "deletion", steps: int = 5
) -> list[str]:
    """Word deletion or insertion checkpoints of a caption (paper Table III): one word per step,
    most important first (ties in caption order), ``steps + 1`` texts with the untouched start first.

    Deletion removes the words' characters from the caption (whitespace collapsed); insertion
    starts from the empty text and keeps the inserted words in caption order, joined by spaces.
    Once every word is removed / inserted, later checkpoints repeat the last text.

    Args:
        text: the caption.
        spans: ``(start, end)`` character offsets of its words (``TextExplanation.spans(t)``).
        importance: one importance per word (``TextExplanation.words(b, t)``).
        mode: ``"deletion"`` or ``"insertion"``.
        steps: words changed in all.

    Returns:
        ``steps + 1`` strings.
    """
    if mode not in MODES:
        raise InputError(f"mode must be one of {', '.join(map(repr, MODES))}, got {mode!r}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise InputError(f"steps must be a positive integer, got {steps!r}")
    if len(spans) != len(importance):
        raise InputError(f"got {len(spans)} word spans but {len(importance)} importances")
    order = sorted(range(len(spans)), key=lambda w: (-importance[w], w))
    out = []
    for k in range(steps + 1):
        chosen = set(order[:k])
        if mode == "deletion":
            kept, cursor = [], 0
            for w in sorted(chosen, key=lambda w: spans[w][0]):
                kept.append(text[cursor : spans[w][0]])
                cursor = spans[w][1]
            kept.append(text[cursor:])
            out.append(" ".join("".join(kept).split()))
        else:
            out.append(" ".join(text[spans[w][0] : spans[w][1]] for w in sorted(chosen)))
    return out
