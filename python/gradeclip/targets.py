"""What each image of a dataset run is explained against, and the grouping that lets a
shared-text Explainer give every image its own texts."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Hashable

import numpy as np
import torch
from torch import Tensor

from .data import Sample
from .explainer import Explainer
from .zeroshot import LabelMatcher


@dataclass
class Row:
    """One explained pair's index values and its raw map (``[h, w]`` float16 numpy), or an error."""

    values: dict[str, Any]
    map: np.ndarray | None = None


def group(wanted: Sequence[Sequence[Hashable]], max_targets: int) -> list[tuple[int, int, list[Hashable]]]:
    """Cut consecutive images into groups ``(start, stop, union)``: images ``start..stop-1`` and
    the union of their wanted targets (first-seen order), which stays within
    ``max(max_targets, number of the group's first image's targets)``."""
    groups = []
    start = 0
    while start < len(wanted):
        union = list(dict.fromkeys(wanted[start]))
        limit = max(max_targets, len(union))
        stop = start + 1
        while stop < len(wanted):
            seen = set(union)
            merged = union + [t for t in dict.fromkeys(wanted[stop]) if t not in seen]
            if len(merged) > limit:
                break
            union, stop = merged, stop + 1
        groups.append((start, stop, union))
        start = stop
    return groups


def explain_subsets(
    explainer: Explainer, images: Tensor, wanted: list[list[int]], bank: Tensor, max_targets: int, method: str, options: dict[str, Any]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Explain image ``i`` against ``bank[wanted[i]]`` for every i, one ``explain_image`` call per
    :func:`group`.

    Returns, per image, ``(maps [k, h, w] float16, scores [k] float32, model_scores [k] float32)``
    in the order of ``wanted[i]``.
    """
    results: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    for start, stop, union in group(wanted, max_targets):
        out = explainer.explain_image(images[start:stop], bank[union], method=method, **options)
        column = {t: j for j, t in enumerate(union)}
        for i in range(start, stop):
            pick = torch.tensor([column[t] for t in wanted[i]], device=out.maps.device)
            row = i - start
            results.append(
                (
                    out.maps[row, pick].to("cpu", torch.float16).numpy(),
                    out.scores[row, pick].float().cpu().numpy(),
                    out.model_scores[row, pick].float().cpu().numpy(),
                )
            )
    return results


def explain_words(
    explainer: Explainer, images: Tensor, wanted: list[list[str]], max_targets: int, options: dict[str, Any]
) -> list[list[list[tuple[str, float]]]]:
    """Textual explanations (SPEC §3) of each image's texts ``wanted[i]`` against that image, one
    ``explain_text`` call per :func:`group`. ``options``: ``n_layers``, ``heads``.

    Returns, per image and per wanted text, ``[(word, importance), …]`` in caption order.
    """
    results: list[list[list[tuple[str, float]]]] = []
    for start, stop, union in group(wanted, max_targets):
        out = explainer.explain_text(images[start:stop], [str(t) for t in union], **options)
        column = {t: j for j, t in enumerate(union)}
        results += [[out.words(i - start, column[t]) for t in wanted[i]] for i in range(start, stop)]
    return results


@dataclass
class Targets:
    """What each image is explained against.

    Attributes:
        explainer: explains the images.
        mode: ``"texts"`` (every image against ``names``), ``"pairs"`` (each image against its own
            caption) or ``"zeroshot"`` (each image against its ``top_k`` predicted classes of
            ``names``, plus its labelled class).
        names: the shared texts or the class names (None for pairs).
        bank: their unit-norm embeddings ``[len(names), E]`` on the model's device (None for pairs).
        top_k, max_targets, method, options: see :class:`gradeclip.ExplainJob`.
        text_options: ``explain_text`` options (``n_layers``, ``heads``) to add each pair's word
            importances (columns ``words``, ``word_importance``); None for none.
    """

    explainer: Explainer
    mode: str
    names: list[str] | None
    bank: Tensor | None
    top_k: int
    max_targets: int
    method: str
    options: dict[str, Any]
    text_options: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        self.labels = LabelMatcher(self.names) if self.mode == "zeroshot" and self.names is not None else None

    def rows(self, images: Tensor, samples: Sequence[Sample]) -> list[list[Row]]:
        """The rows of each sample (all decoded; ``images`` ``[n, 3, H, W]`` on the model's device),
        in the order the store keeps them."""
        if self.mode == "texts":
            rows = self._texts(images)
        elif self.mode == "pairs":
            rows = self._pairs(images, samples)
        else:
            rows = self._zeroshot(images, samples)
        if self.text_options is not None:
            self._add_words(images, rows)
        return rows

    def _add_words(self, images: Tensor, rows: list[list[Row]]) -> None:
        """Add each explained row's word importances, computed per group of images."""
        explained = [i for i, sample_rows in enumerate(rows) if any(r.map is not None for r in sample_rows)]
        wanted = [[r.values["text"] for r in rows[i] if r.map is not None] for i in explained]
        if not explained:
            return
        assert self.text_options is not None
        words = explain_words(self.explainer, images[explained], wanted, self.max_targets, self.text_options)
        for i, per_text in zip(explained, words):
            for row, pairs in zip([r for r in rows[i] if r.map is not None], per_text):
                row.values["words"] = [w for w, _ in pairs]
                row.values["word_importance"] = [v for _, v in pairs]

    def _explain(self, images: Tensor, wanted: list[list[int]], bank: Tensor) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        return explain_subsets(self.explainer, images, wanted, bank, self.max_targets, self.method, self.options)

    def _texts(self, images: Tensor) -> list[list[Row]]:
        assert self.bank is not None and self.names is not None
        everything = list(range(len(self.names)))
        out = self._explain(images, [everything] * images.shape[0], self.bank)
        return [
            [Row({"text": self.names[t], "text_index": t, "score": s[t], "model_score": ms[t]}, maps[t]) for t in everything]
            for maps, s, ms in out
        ]

    def _pairs(self, images: Tensor, samples: Sequence[Sample]) -> list[list[Row]]:
        captions = list(dict.fromkeys(s.caption for s in samples if s.caption))
        keep = [i for i, s in enumerate(samples) if s.caption]
        results: list[list[Row]] = [[Row({"status": "error", "error": "no caption (each image is explained against its own caption)"})] for _ in samples]
        if keep:
            bank, _ = self.explainer.encode_texts(captions)
            index = {c: j for j, c in enumerate(captions)}
            out = self._explain(images[keep], [[index[samples[i].caption]] for i in keep], bank)  # type: ignore[index]
            for i, (maps, s, ms) in zip(keep, out):
                results[i] = [Row({"text": samples[i].caption, "score": s[0], "model_score": ms[0]}, maps[0])]
        return results

    def _zeroshot(self, images: Tensor, samples: Sequence[Sample]) -> list[list[Row]]:
        assert self.bank is not None and self.names is not None and self.labels is not None
        model = self.explainer.model
        with torch.no_grad():
            features = model.encode_image(images.to(next(model.parameters()).dtype)).float()
        logits = (features / features.norm(dim=-1, keepdim=True)) @ self.bank.T
        top = logits.topk(min(self.top_k, len(self.names)), dim=-1).indices.tolist()
        truth = [self.labels(s.label) if s.label is not None else None for s in samples]
        wanted = [t + ([g] if g is not None and g not in t else []) for t, g in zip(top, truth)]
        out = self._explain(images, wanted, self.bank)
        results = []
        for sample, classes, ranked, gt, (maps, s, ms) in zip(samples, wanted, top, truth, out):
            rows = [
                Row(
                    {
                        "text": self.names[c],
                        "text_index": c,
                        "prediction_rank": ranked.index(c) + 1 if c in ranked else None,
                        "is_label": None if sample.label is None else c == gt,
                        "score": s[j],
                        "model_score": ms[j],
                    },
                    maps[j],
                )
                for j, c in enumerate(classes)
            ]
            if sample.label is not None and gt is None:
                rows.append(Row({"is_label": True, "status": "error", "error": f"label {sample.label!r} names no class"}))
            results.append(rows)
        return results
