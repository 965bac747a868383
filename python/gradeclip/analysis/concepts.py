"""Concept decomposition and addibility (paper §5.1, SPEC §11): the map of a phrase against the
maps of its words."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from ..errors import InputError
from ..explainer import Explainer
from .common import localise, overlays, seen_pixels
from .figures import map_grid


@dataclass
class PhraseReport:
    """One phrase's addibility numbers.

    Attributes:
        phrase: the phrase, e.g. ``"red toy"``.
        words: its words, each explained alone.
        word_cosine: per word, the cosine similarity of the phrase's raw map with the word's.
        sum_cosine: the cosine similarity of the phrase's map with the sum of its words' maps.
        energy: per text (each word, then the phrase), the energy-PG of its map inside the mask
            (SPEC §8), or None when no mask was given.
        maps: raw grid maps ``[len(words) + 1, h, w]`` float32: the words', then the phrase's.
        scores: the explained cosine scores ``[len(words) + 1]``, in the same order.
    """

    phrase: str
    words: list[str]
    word_cosine: list[float]
    sum_cosine: float
    energy: dict[str, float] | None
    maps: np.ndarray
    scores: np.ndarray

    def row(self) -> dict[str, Any]:
        """The numbers as one flat, JSON-able record."""
        out: dict[str, Any] = {"phrase": self.phrase, "words": self.words, "sum_cosine": self.sum_cosine}
        out.update({f"cosine[{w}]": c for w, c in zip(self.words, self.word_cosine)})
        if self.energy is not None:
            out.update({f"energy[{t}]": e for t, e in self.energy.items()})
        return out


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two maps as flat vectors (float64); NaN when either is all zero."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    norm = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / norm) if norm > 0 else float("nan")


def addibility(
    explainer: Explainer,
    image: Tensor,
    phrases: Sequence[str],
    *,
    words: Sequence[Sequence[str]] | None = None,
    mask: np.ndarray | None = None,
    figure: str | os.PathLike[str] | None = None,
    **options: Any,
) -> list[PhraseReport]:
    """Word maps vs phrase maps of one image (SPEC §11, paper Fig. 13).

    Every word and phrase is explained in one :meth:`~gradeclip.Explainer.explain_image` call.

    Args:
        explainer: the model's explainer (with its tokenizer).
        image: one preprocessed image ``[3, H, W]`` (or ``[1, 3, H, W]``).
        phrases: the phrases, e.g. ``["red toy", "feed sheep"]``.
        words: per phrase, the words to explain alone (default: the phrase split on spaces).
        mask: optional bool ``[H', W']`` object mask (any size; maps are upsampled to it).
        figure: optional PNG path for the grid: per phrase, image | word maps | phrase map.
        **options: Grad-ECLIP options for ``explain_image`` (``compat``, ``heads``, ...).

    Returns:
        one :class:`PhraseReport` per phrase.
    """
    if image.ndim == 3:
        image = image.unsqueeze(0)
    if image.ndim != 4 or image.shape[0] != 1:
        raise InputError(f"addibility takes one image [3, H, W], got shape {tuple(image.shape)}")
    phrases = [p.strip() for p in phrases]
    if not phrases or not all(phrases):
        raise InputError("phrases must be one or more non-empty phrases")
    split = [p.split() for p in phrases] if words is None else [list(w) for w in words]
    if len(split) != len(phrases) or not all(split):
        raise InputError(f"words must give a non-empty word list for each of the {len(phrases)} phrases")
    texts = list(dict.fromkeys([w for ws in split for w in ws] + phrases))
    column = {t: i for i, t in enumerate(texts)}
    out = explainer.explain_image(image, texts, **options)
    maps = out.maps[0].float().cpu().numpy()
    scores = out.scores[0].float().cpu().numpy()
    reports = []
    for phrase, ws in zip(phrases, split):
        picked = [column[w] for w in ws] + [column[phrase]]
        these = maps[picked]
        energy = None
        if mask is not None:
            _, energies = localise(these, [np.asarray(mask, bool)] * len(picked))
            energy = dict(zip([*ws, phrase], map(float, energies)))
        reports.append(
            PhraseReport(
                phrase=phrase,
                words=list(ws),
                word_cosine=[cosine(these[-1], m) for m in these[:-1]],
                sum_cosine=cosine(these[-1], these[:-1].sum(axis=0)),
                energy=energy,
                maps=these,
                scores=scores[picked],
            )
        )
    if figure is not None:
        pixels = seen_pixels(explainer, image)[0]
        grid = []
        for r in reports:
            drawn = overlays(pixels, r.maps)
            cells = [(pixels, "image")] + [(drawn[i], f'"{w}"') for i, w in enumerate(r.words)]
            cells.append((drawn[-1], f'"{r.phrase}"  cos(Σ words) {r.sum_cosine:.2f}'))
            grid.append(cells)
        map_grid(grid, figure)
    return reports
