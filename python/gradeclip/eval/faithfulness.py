"""Faithfulness of image explanations: deletion and insertion curves (SPEC §7, paper Tables I–II).

Per chunk of images: load (threads) → the model's geometry in Rust (resize + centre crop, exactly
Pillow's) → explain (:class:`~gradeclip.eval.models.Maps`) → every checkpoint of every image as a
model-ready batch in Rust → the image tower in large batches → scorer hits. Each stage is timed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._version import __version__
from ..data import Sample, load_images
from PIL import Image

from ..compat import eval_form
from ..errors import InputError
from ..preprocessing import authors_cap, resize_center_crop
from .datasets import CaptionTable, ImageFolder
from .models import UPSAMPLING, EvalModel, Maps, check_method
from .perturbation import MODES, check_modes, checkpoint_fractions, perturbation_steps
from .pixel_order import ordered_heat
from .report import FaithfulnessResult, default_name
from .runner import Stopwatch, first_samples, positive_int, run_resumable, save
from .scorers import RetrievalScorer, ZeroShotClassifier

TARGETS = {"ground_truth": "ground_truth", "gt": "ground_truth", "predicted": "predicted", "pred": "predicted"}


def deletion_insertion(
    model: nn.Module,
    dataset: ImageFolder | CaptionTable,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    method: str = "gradeclip",
    options: dict[str, Any] | None = None,
    target: str = "ground_truth",
    class_names: Sequence[str] | None = None,
    templates: Sequence[Callable[[str], str] | str] | None = None,
    modes: Sequence[str] = MODES,
    steps: int = 100,
    eval_every: int = 10,
    seed: int = 0,
    resolution: str | None = None,
    max_short_side: int | None = None,
    compat: str | None = None,
    pixel_order: str | None = None,
    batch_size: int = 64,
    chunk_size: int = 16,
    explain_batch_size: int = 8,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> FaithfulnessResult:
    """Deletion and insertion curves of an explanation method over a dataset (SPEC §7).

    Each image is explained for its target text; its pixels are removed (deletion: replaced by
    seeded noise) or inserted (into a black image) in heat-map order; every ``eval_every`` steps
    the image is scored by the model. Curves are dataset means, AUCs trapezoid areas over x ∈ [0, 1].

    Args:
        model: any model the Explainer explains against texts (open_clip CLIP / CoCa, timm-tower
            CLIPs, transformers CLIP and BLIP).
        dataset: an :class:`ImageFolder` (zero-shot classification, top-1/top-5) or a
            :class:`CaptionTable` (retrieval, IR/TR @1/@5).
        tokenizer: the model's tokenizer (for class prompts or captions).
        method, options: an explanation method the Explainer accepts and its options.
        target: ``"ground_truth"`` (the labelled class / the row's caption) or ``"predicted"``
            (the model's top-1 class on the clean image; classification only).
        class_names, templates: zero-shot classifier; default ``open_clip.IMAGENET_CLASSNAMES`` for
            a 1000-class folder (else the folder's class names) and ``OPENAI_IMAGENET_TEMPLATES``.
        modes: any of ``"deletion"``, ``"insertion"``.
        steps, eval_every, seed: the schedule and the deletion fill's seed (image ``i``'s fill is
            stream ``i`` of the seed, whatever the chunking).
        resolution: ``"model"`` (explain and perturb the model's resize + centre crop, as the model
            sees it) or ``"native"`` (explain at the image's own size, perturb the original image,
            score its model-ready view).
        max_short_side: cap for ``resolution="native"``.
        compat: ``"authors"``: their ``imagenet_eval_deletion.py`` (SPEC §12, ``docs/reproduce.md``):
            ``qk_space="out_proj"``, native resolution in their geometry (the image capped at 640 px
            by ``int()`` truncation and explained at ``int(x/p + 0.5)·p``; maps, perturbation and
            scores on the capped image) and ``pixel_order="argsort"``; values given explicitly
            win. ``method="gradeclip"`` only.
        pixel_order: ``"stable"`` (default: SPEC §7) or ``"argsort"`` (:mod:`gradeclip.eval.pixel_order`).
        batch_size: images per scoring forward (checkpoints of several images are batched together).
        chunk_size: images prepared at once (memory: ``chunk_size · K · 3 · S² · 4`` bytes per mode).
        explain_batch_size: images per explainer call (``resolution="model"``).
        limit: evaluate only the first ``limit`` images.
        out_dir: when given, results are saved there as ``<name>.json`` + ``<name>.csv`` and finished
            images are journaled, so an interrupted run resumes where it stopped.
        name: file name stem (default: task, method, target and a settings hash).
        model_name: how to name the model in the settings (e.g. ``"ViT-B-16 openai"``).
        progress: show a progress bar.

    Returns:
        :class:`~gradeclip.eval.report.FaithfulnessResult`.
    """
    form = eval_form(compat, method, options, resolution, max_short_side, pixel_order)
    ordered_heat(np.zeros((1, 1), np.float32), form.pixel_order)  # an unknown order fails before any work
    resolution, max_short_side = form.resolution, form.max_short_side
    options = check_method(method, form.options, resolution, explain_batch_size)
    positive_int("chunk_size", chunk_size)
    if target not in TARGETS:
        raise InputError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    target = TARGETS[target]
    modes = check_modes(modes)
    positive_int("batch_size", batch_size)
    fractions = checkpoint_fractions(steps, eval_every).tolist()
    evaluated = EvalModel(model, tokenizer)
    geometry = evaluated.geometry
    samples = first_samples(dataset, limit)
    clock = Stopwatch()
    scorer: ZeroShotClassifier | RetrievalScorer
    with clock("setup"):
        if isinstance(dataset, CaptionTable):
            if target != "ground_truth":
                raise InputError("retrieval explains each image for its own caption: target must be 'ground_truth'")
            captions = evaluated.encode_texts([s.caption or "" for s in dataset])
            gallery = evaluated.embed_files([dataset.root / key for key in dataset.images], batch_size, progress)
            scorer = RetrievalScorer(captions, gallery, dataset.image_of)
        elif isinstance(dataset, ImageFolder):
            if class_names is None and len(dataset.class_names) != 1000:
                class_names = dataset.class_names
            scorer = ZeroShotClassifier(model, tokenizer, class_names, templates, progress=progress)
            top = max(int(s.label) for s in samples)  # type: ignore[arg-type]  # ImageFolder labels are ints
            if top >= len(scorer.class_names):
                raise InputError(f"labels go up to {top} but there are {len(scorer.class_names)} class names")
        else:
            raise InputError(f"dataset must be an ImageFolder or a CaptionTable, got {type(dataset).__name__}")
    settings = {
        "task": "faithfulness",
        "model": evaluated.describe(model_name),
        "method": method,
        "options": options,
        "target": target,
        **scorer.describe(),
        "dataset": dataset.describe(),
        "images": len(samples),
        "modes": modes,
        "steps": steps,
        "eval_every": eval_every,
        "pixels_per_step": "max(1, H*W // (2*steps))",
        "seed": seed,
        "resolution": resolution,
        "max_short_side": max_short_side,
        **form.settings(),
        "input_size": geometry.size,
        "mean": geometry.mean,
        "std": geometry.std,
        "map_upsampling": UPSAMPLING,
        "gradeclip": __version__,
    }
    name = name or default_name(settings)
    maps = Maps(evaluated, method, options, resolution, max_short_side, explain_batch_size, form.geometry)

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        return _chunk(chunk, evaluated, scorer, maps, target, modes, steps, eval_every, seed, batch_size, clock, form.pixel_order)

    records, journal = run_resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc=f"{method} deletion/insertion",
        progress=progress,
    )
    result = FaithfulnessResult.from_records(settings, scorer.metrics, fractions, records, modes, clock.summary())
    save(result, out_dir, name, journal)
    return result


def _chunk(
    chunk: Sequence[Sample],
    evaluated: EvalModel,
    scorer: ZeroShotClassifier | RetrievalScorer,
    maps: Maps,
    target: str,
    modes: Sequence[str],
    steps: int,
    eval_every: int,
    seed: int,
    batch_size: int,
    clock: Stopwatch,
    pixel_order: str = "stable",
) -> list[dict[str, Any]]:
    """Evaluate one chunk of images; returns one record per image (index, key, target, hits)."""
    g = evaluated.geometry
    with clock("load"):
        originals = load_images([s.path for s in chunk])
    with clock("preprocess"):
        if maps.resolution == "model":
            images = list(resize_center_crop(originals, g.size))
        elif maps.native_geometry == "authors" and maps.max_short_side is not None:
            # their scripts cap first: maps, perturbation and scores are all on the capped image
            images = [np.asarray(authors_cap(Image.fromarray(o), maps.max_short_side)) for o in originals]
        else:
            images = originals
    if isinstance(scorer, RetrievalScorer):
        targets = [s.index for s in chunk]
    elif target == "ground_truth":
        targets = [int(s.label) for s in chunk]  # type: ignore[arg-type]
    else:
        with clock("preprocess"):
            clean = evaluated.model_ready(images)
        with clock("score"):
            targets = scorer.predict(evaluated.encode_images(clean, batch_size))
    with clock("explain"):
        heat = [ordered_heat(h, pixel_order) for h in maps(images, scorer.text_embeddings(targets), targets)]
    k = steps // eval_every + 1
    hits: dict[str, np.ndarray] = {}
    for mode in modes:
        with clock("perturb"):
            batch = perturbation_steps(
                images,
                heat,
                mode,
                steps,
                eval_every,
                seed,
                output_size=g.size,
                mean=g.mean,
                std=g.std,
                streams=[s.index for s in chunk],
            )
            pixels = torch.from_numpy(batch).view(len(chunk) * k, 3, g.size, g.size)
        with clock("score"):
            embeddings = evaluated.encode_images(pixels, batch_size)
            hits[mode] = scorer.hits(embeddings, [t for t in targets for _ in range(k)]).reshape(len(chunk), k, -1)
    return [
        {"index": s.index, "key": s.key, "target": int(t), "hits": {mode: hits[mode][n].astype(int).tolist() for mode in modes}}
        for n, (s, t) in enumerate(zip(chunk, targets))
    ]
