"""Localisation of image explanations against object masks (SPEC §8, paper Table IV): Point
Game, energy-PG, pixel accuracy, mask IoU and AP of each map.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from torch import Tensor, nn

from .._version import __version__
from ..data import Sample, load_images, load_mask
from ..errors import InputError
from ..preprocessing import mask_in_geometry, resize_center_crop
from .datasets import MaskFolder
from .metrics import LOCALIZATION_METRICS, localization_metrics
from ..compat import eval_form
from .models import UPSAMPLING, EvalModel, Maps, check_method
from .report import LocalizationResult, default_name
from .runner import Stopwatch, first_samples, positive_int, run_resumable, save
from .scorers import ZeroShotClassifier


def localization(
    model: nn.Module,
    dataset: MaskFolder,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    method: str = "gradeclip",
    options: dict[str, Any] | None = None,
    text: str | None = None,
    class_names: Sequence[str] | None = None,
    templates: Sequence[Callable[[str], str] | str] | None = None,
    resolution: str | None = None,
    max_short_side: int | None = None,
    compat: str | None = None,
    chunk_size: int = 16,
    explain_batch_size: int = 8,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> LocalizationResult:
    """Point Game, energy-PG, pixel accuracy, mask IoU and AP of a method's maps against object
    masks (SPEC §8, paper Table IV).

    Each image is explained for its class (prompt-ensembled class embedding, as in zero-shot
    classification) or, with ``text``, for that text. With ``resolution="model"`` image and mask go
    through the model's geometry (the mask with nearest-neighbour resizing) and the map is
    upsampled to ``S × S``; with ``"native"`` the map is upsampled to the original mask size.
    Images whose mask has no object pixel left are skipped (listed in ``skipped``).

    Args: as for :func:`deletion_insertion`; ``class_names`` defaults to the folder's class names
    (or ``open_clip.IMAGENET_CLASSNAMES`` for 1000 classes).

    Returns:
        :class:`~gradeclip.eval.report.LocalizationResult`.
    """
    form = eval_form(compat, method, options, resolution, max_short_side)
    resolution, max_short_side = form.resolution, form.max_short_side
    options = check_method(method, form.options, resolution, explain_batch_size)
    positive_int("chunk_size", chunk_size)
    if not isinstance(dataset, MaskFolder):
        raise InputError(f"dataset must be a MaskFolder, got {type(dataset).__name__}")
    evaluated = EvalModel(model, tokenizer)
    samples = first_samples(dataset, limit)
    clock = Stopwatch()
    with clock("setup"):
        if text is not None:
            if not text.strip():
                raise InputError("text is empty")
            text_emb = evaluated.encode_texts([text])
            describe: dict[str, Any] = {"text": text}
            embed = lambda labels: text_emb.expand(len(labels), -1)
        else:
            if any(s.label is None for s in samples):
                raise InputError("images are not in class folders: give text= to explain them for")
            if class_names is None and len(dataset.class_names) != 1000:
                class_names = dataset.class_names
            classifier = ZeroShotClassifier(model, tokenizer, class_names, templates, progress=progress)
            describe = classifier.describe()
            describe.pop("scorer")
            embed = classifier.text_embeddings
    settings = {
        "task": "localization",
        "model": evaluated.describe(model_name),
        "method": method,
        "options": options,
        **describe,
        "dataset": dataset.describe(),
        "images": len(samples),
        "resolution": resolution,
        "max_short_side": max_short_side,
        "input_size": evaluated.geometry.size,
        "map_upsampling": UPSAMPLING,
        "map_normalisation": "min-max per map (constant map -> zeros)",
        "foreground": "h > mean(h)",
        "gradeclip": __version__,
        **{k: v for k, v in form.settings().items() if k != "pixel_order"},
    }
    name = name or default_name(settings)
    maps = Maps(evaluated, method, options, resolution, max_short_side, explain_batch_size, form.geometry)

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        return _chunk(chunk, dataset.mask_format, maps, embed, clock)

    records, journal = run_resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc=f"{method} localisation",
        progress=progress,
    )
    kept = [r for r in records if not r.get("skipped")]
    result = LocalizationResult(
        settings=settings,
        values={m: np.array([r[m] for r in kept], dtype=np.float64) for m in LOCALIZATION_METRICS},
        keys=[r["key"] for r in kept],
        skipped=[r["key"] for r in records if r.get("skipped")],
        timings=clock.summary(),
    )
    save(result, out_dir, name, journal)
    return result


def _chunk(
    chunk: Sequence[Sample], mask_format: str, maps: Maps, embed: Callable[[list[int]], Tensor], clock: Stopwatch
) -> list[dict[str, Any]]:
    """SPEC §8 metrics of one chunk; a sample whose mask has no object pixel left is marked skipped."""
    with clock("load"):
        originals = load_images([s.path for s in chunk])
        masks = [load_mask(s.mask, mask_format) for s in chunk]  # type: ignore[arg-type]
    for image, mask, s in zip(originals, masks, chunk):
        if image.shape[:2] != mask.shape:
            raise InputError(
                f"{s.key}: image is {image.shape[0]}×{image.shape[1]} but its mask is {mask.shape[0]}×{mask.shape[1]}"
            )
    with clock("preprocess"):
        if maps.resolution == "model":
            size = maps.evaluated.geometry.size
            images = list(resize_center_crop(originals, size))
            masks = [mask_in_geometry(m, size) for m in masks]
        else:
            images = originals
    labels = [int(s.label) if s.label is not None else 0 for s in chunk]
    with clock("explain"):
        heat = maps(images, embed(labels), labels)
    keep = [n for n, m in enumerate(masks) if m.any()]
    values = localization_metrics([heat[n] for n in keep], [masks[n] for n in keep]) if keep else {}
    records: list[dict[str, Any]] = []
    for n, s in enumerate(chunk):
        if n in keep:
            records.append({"index": s.index, "key": s.key, **{m: float(values[m][keep.index(n)]) for m in LOCALIZATION_METRICS}})
        else:
            records.append({"index": s.index, "key": s.key, "skipped": True})
    return records
