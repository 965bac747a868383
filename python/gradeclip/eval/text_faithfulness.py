"""Faithfulness of text explanations: word deletion and insertion of captions (paper Table III),
by Grad-ECLIP's textual explanation (SPEC §3), scored by retrieval with the perturbed caption.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._version import __version__
from ..data import Sample, load_images
from ..compat import check_compat
from ..errors import InputError
from ..explainer import default_text_layers
from .datasets import CaptionTable
from .models import EvalModel
from .perturbation import MODES, check_modes, text_steps
from .report import FaithfulnessResult, default_name
from .runner import Stopwatch, first_samples, positive_int, run_resumable, save
from .scorers import TextRetrievalScorer


def text_deletion_insertion(
    model: nn.Module,
    dataset: CaptionTable,
    *,
    tokenizer: Callable[[list[str]], Tensor],
    n_text_layers: int | None = None,
    heads: str = "single",
    compat: str | None = None,
    modes: Sequence[str] = MODES,
    steps: int = 5,
    batch_size: int = 64,
    chunk_size: int = 16,
    limit: int | None = None,
    out_dir: str | os.PathLike[str] | None = None,
    name: str | None = None,
    model_name: str | None = None,
    progress: bool = True,
) -> FaithfulnessResult:
    """Word deletion and insertion of captions by Grad-ECLIP's textual explanation (SPEC §3, §7;
    paper Table III): each caption is explained against its image (in the model's geometry),
    its words are removed from it (deletion) or inserted into an empty text (insertion) one per
    step, most important first, and every step's caption is scored by retrieval
    (:class:`TextRetrievalScorer`). ``fractions`` holds the number of words changed, ``0..steps``;
    AUCs take x uniform on [0, 1].

    Args:
        model, dataset, tokenizer: the model, a :class:`CaptionTable` and the model's tokenizer
            (open_clip's ``SimpleTokenizer``, which the textual explanation needs).
        n_text_layers, heads: options of :meth:`gradeclip.Explainer.explain_text` (None: ``min(8, depth)``).
        compat: ``"authors"``: the authors' released textual form (SPEC §3 (a), (b), §12).
        modes, steps: which curves, and how many words (default 5, as in the paper).
        Other arguments as for :func:`deletion_insertion`.
    """
    modes = check_modes(modes)
    check_compat(compat)
    positive_int("steps", steps)
    positive_int("chunk_size", chunk_size)
    if not isinstance(dataset, CaptionTable):
        raise InputError(f"dataset must be a CaptionTable, got {type(dataset).__name__}")
    evaluated = EvalModel(model, tokenizer)
    samples = first_samples(dataset, limit)
    clock = Stopwatch()
    with clock("setup"):
        captions = evaluated.encode_texts([s.caption or "" for s in dataset])
        gallery = evaluated.embed_files([dataset.root / key for key in dataset.images], batch_size, progress)
        scorer = TextRetrievalScorer(captions, gallery, dataset.image_of)
    if n_text_layers is None:
        n_text_layers = default_text_layers(evaluated.explainer.text_tower)
    settings = {
        "task": "text_faithfulness",
        "model": evaluated.describe(model_name),
        "method": "gradeclip",
        "options": {"n_text_layers": n_text_layers, "heads": heads, **({} if compat is None else {"compat": compat})},
        "target": "ground_truth",
        **scorer.describe(),
        "dataset": dataset.describe(),
        "images": len(samples),
        "modes": modes,
        "steps": steps,
        "words_per_step": 1,
        "word_order": "importance descending, ties in caption order",
        "input_size": evaluated.geometry.size,
        "gradeclip": __version__,
    }
    name = name or default_name(settings)
    explainer = evaluated.explainer

    def evaluate(chunk: Sequence[Sample]) -> list[dict[str, Any]]:
        with clock("load"):
            keys = list(dict.fromkeys(dataset.images[dataset.image_of[s.index]] for s in chunk))
            pixels = evaluated.model_ready(load_images([dataset.root / k for k in keys]))
        texts: dict[str, list[tuple[int, list[str]]]] = {mode: [] for mode in modes}
        with clock("explain"):
            for position, key in enumerate(keys):
                rows = [s for s in chunk if dataset.images[dataset.image_of[s.index]] == key]
                exp = explainer.explain_text(
                    pixels[position : position + 1],
                    [s.caption or "" for s in rows],
                    n_layers=n_text_layers,
                    heads=heads,
                    compat=compat,
                )
                for t, s in enumerate(rows):
                    importance = [w for _, w in exp.words(0, t)]
                    for mode in modes:
                        texts[mode].append((s.index, text_steps(s.caption or "", exp.spans(t), importance, mode, steps)))
        by_index: dict[int, dict[str, Any]] = {
            s.index: {"index": s.index, "key": s.key, "target": s.index, "hits": {}} for s in chunk
        }
        with clock("score"):
            for mode in modes:
                rows_and_steps = texts[mode]
                flat = [text for _, variants in rows_and_steps for text in variants]
                hits = scorer.hits(
                    evaluated.encode_texts(flat), [i for i, variants in rows_and_steps for _ in variants]
                ).reshape(len(rows_and_steps), steps + 1, -1)
                for (index, _), h in zip(rows_and_steps, hits):
                    by_index[index]["hits"][mode] = h.astype(int).tolist()
        return [by_index[s.index] for s in chunk]

    records, journal = run_resumable(
        samples,
        evaluate,
        settings=settings,
        out_dir=out_dir,
        name=name,
        chunk_size=chunk_size,
        desc="gradeclip text deletion/insertion",
        progress=progress,
    )
    fractions = [float(k) for k in range(steps + 1)]
    result = FaithfulnessResult.from_records(settings, scorer.metrics, fractions, records, modes, clock.summary())
    save(result, out_dir, name, journal)
    return result
