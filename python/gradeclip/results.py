"""Result objects returned by :class:`gradeclip.Explainer`."""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from torch import Tensor

from .errors import InputError
from .image_inputs import ImageInput
from .words import WordAlignment


@dataclass(frozen=True)
class ImageExplanation:
    """Visual explanations of B images against T texts.

    Attributes:
        maps: ``[B, T, h, w]`` float32, raw (unnormalised) maps on the token grid of the explained
            input (``resolution == "tokens"``), or at the input's pixel size for pixel-based
            methods (``resolution == "pixels"``). On the model's device.
        scores: ``[B, T]`` float32, the score the method explains (for Grad-ECLIP with
            ``heads="single"``, the cosine of the single-head forward).
        model_scores: ``[B, T]`` float32, the unmodified model's cosine score.
        texts: the texts explained (None when text embeddings or token ids were given, or classes).
        method: the method's registered name.
        options: the options the method ran with.
        image_size: ``(H, W)`` of the explained (preprocessed) input.
        resolution: ``"tokens"`` or ``"pixels"``.
        extras: method-specific tensors (Grad-ECLIP ``per_head=True``: ``"head_maps"``
            ``[B, T, H, h, w]``).
        text_specific: False for text-agnostic methods (``raw_attention``, ``rollout``): their map
            ignores the text, so ``maps[:, t]`` is the same for every t.
        classes: the class indices explained (:meth:`Explainer.explain_classes`; then ``scores``
            and ``model_scores`` are logits), else None.
        inputs: when the images were given as PIL images, arrays or paths, each one's original
            pixels and how it was mapped to the model input (:class:`~gradeclip.image_inputs.ImageInput`),
            for :meth:`overlay` and :meth:`save`; None for preprocessed tensors.
    """

    maps: Tensor
    scores: Tensor
    model_scores: Tensor
    texts: list[str] | None
    method: str
    options: dict[str, Any]
    image_size: tuple[int, int]
    resolution: str = "tokens"
    extras: dict[str, Tensor] = field(default_factory=dict)
    text_specific: bool = True
    classes: list[int] | None = None
    inputs: list[ImageInput] | None = None

    @property
    def grid(self) -> tuple[int, int]:
        """``(h, w)`` of each map."""
        return (self.maps.shape[-2], self.maps.shape[-1])

    def upsampled(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The maps upsampled bilinearly with half-pixel centres (SPEC §5) to ``size`` (default:
        ``image_size``), as numpy float32 ``[B, T, H, W]`` on the CPU (see :func:`gradeclip.render.upsample`)."""
        from . import render

        b, t, h, w = self.maps.shape
        up = render.upsample(self.maps.detach().reshape(b * t, h, w), self.image_size if size is None else size)
        return up.reshape(b, t, *up.shape[1:])

    def normalized(self) -> np.ndarray:
        """:meth:`upsampled` maps, each min-max normalised to [0, 1] (a constant map becomes zeros),
        as numpy float32 ``[B, T, H, W]`` — the maps SPEC §5 displays and evaluates."""
        from . import render

        up = self.upsampled()
        return render.normalize(up.reshape(-1, *up.shape[2:])).reshape(up.shape)

    def overlay(self, b: int = 0, t: int = 0, *, alpha: float = 0.5, colormap: str = "jet") -> np.ndarray:
        """Map ``(b, t)`` over image ``b`` as it was given, at its own size: uint8 RGB ``[H, W, 3]``.

        The map is drawn over the part of the original the model saw and the border its centre crop
        cut away is dimmed (:func:`gradeclip.image_inputs.overlay_original`). Needs the images as
        PIL images, arrays or paths; for preprocessed tensors use :func:`gradeclip.render.overlay`
        with the input's pixels.
        """
        from .image_inputs import overlay_original

        if self.inputs is None:
            raise InputError(
                "the images were given as preprocessed tensors, so their originals are not known: pass PIL images, "
                "arrays or paths to explain_image, or draw on the input's pixels with gradeclip.render.overlay"
            )
        b, t = self._pair_index(b, t)
        source = self.inputs[b]
        return overlay_original(source.pixels, self.maps[b, t].detach(), source.mapping, alpha, colormap)

    def save(self, path: str | os.PathLike[str], b: int = 0, t: int = 0, *, alpha: float = 0.5, colormap: str = "jet") -> None:
        """Write :meth:`overlay` ``(b, t)`` as a PNG file at ``path`` (atomically; the folder must exist)."""
        from . import files, render

        files.write_bytes(path, render.encode_png(self.overlay(b, t, alpha=alpha, colormap=colormap)[None])[0])

    def _pair_index(self, b: int, t: int) -> tuple[int, int]:
        count, texts = self.maps.shape[:2]
        for name, value, size in (("b", b, count), ("t", t, texts)):
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < size:
                raise InputError(f"{name} must be an integer in 0..{size - 1}, got {value!r}")
        return b, t

    def _labels(self) -> list[str]:
        if self.texts is not None:
            return list(self.texts)
        if self.classes is not None:
            return [f"class {c}" for c in self.classes]
        return [f"text {t}" for t in range(self.maps.shape[1])]

    def __repr__(self) -> str:
        from .html_views import score_summary, short_list

        b, t, h, w = self.maps.shape
        where = "token grid" if self.resolution == "tokens" else "pixels"
        what = "classes" if self.classes is not None else "texts"
        return (
            f"ImageExplanation(method={self.method!r}, {b} images × {t} {what} {short_list(self._labels())}, "
            f"maps [{b}, {t}, {h}, {w}] on the {where} of a {self.image_size[0]}×{self.image_size[1]} input, "
            f"{score_summary(self.scores)})"
        )

    def _repr_html_(self) -> str:
        """The maps as coloured heat maps in a table (images × texts), with each pair's score."""
        from . import html_views, render

        b, t = self.maps.shape[:2]
        nb, nt = min(b, html_views.MAX_IMAGES), min(t, html_views.MAX_TEXTS)
        if self.inputs is not None:
            pictures = [[self.overlay(i, j) for j in range(nt)] for i in range(nb)]
        else:
            heat = render.colorize(self.normalized()[:nb, :nt].reshape(nb * nt, *self.image_size))
            pictures = [[heat[i * nt + j] for j in range(nt)] for i in range(nb)]
        labels = self._labels()[:nt]
        rows = [
            [f"image {i}"] + [html_views.png_img(pictures[i][j], labels[j]) + f"<br/>{float(self.scores[i, j]):.4f}" for j in range(nt)]
            for i in range(nb)
        ]
        what = "overlays on the images as given" if self.inputs is not None else "heat maps"
        caption = f"{self.method}: {what} and scores{html_views.more_note(nb, b, nt, t)}"
        return html_views.table(["", *labels], rows, caption)

@dataclass(frozen=True)
class TextExplanation:
    """Textual explanations of T texts against B images (SPEC §3).

    Attributes:
        importance: ``[B, T, context_length]`` float32: the importance of each token position of
            text t for its match with image b. Zero at the start and end tokens and the padding;
            each row sums to 1 (or is all zero). On the model's device.
        scores: ``[B, T]`` float32, the score explained (with ``heads="single"``, the cosine of the
            text tower run with single-head blocks).
        model_scores: ``[B, T]`` float32, the unmodified model's cosine score.
        texts: the captions, as given (None when token ids were given).
        alignments: per text, how its tokens map back to its words (:class:`~gradeclip.words.WordAlignment`);
            None when token ids were given.
        options: ``n_layers`` and ``heads`` the explanation ran with.
    """

    importance: Tensor
    scores: Tensor
    model_scores: Tensor
    texts: list[str] | None
    alignments: list[WordAlignment] | None
    options: dict[str, Any]

    def _alignment(self, t: int) -> WordAlignment:
        if self.alignments is None:
            raise InputError("the texts were given as token ids: there are no words, only token positions (importance)")
        return self.alignments[t]

    def tokens(self, t: int) -> list[str]:
        """The decoded BPE token strings of text ``t`` at positions ``0..EOT`` (aligned with
        ``importance[:, t]``; start and end tokens included). A piece holding part of a multi-byte
        character decodes to ``"\ufffd"``."""
        return list(self._alignment(t).tokens)

    def words(self, b: int, t: int) -> list[tuple[str, float]]:
        """``[(word, importance), …]`` of text ``t`` against image ``b``, in caption order.

        Words are exactly as written in the caption (case, accents, entities kept); leading and
        trailing punctuation are words of their own; a word's importance is the sum of its BPE
        pieces' (so the words of an untruncated caption sum to 1, or all are 0). Words cut off by
        truncation are left out.
        """
        row = self.importance[b, t].tolist()
        alignment = self._alignment(t)
        return [(word, float(sum(row[p] for p in pos))) for word, pos in zip(alignment.words, alignment.positions)]

    def spans(self, t: int) -> list[tuple[int, int]]:
        """``(start, end)`` character offsets in ``texts[t]`` of the words :meth:`words` returns."""
        return list(self._alignment(t).spans)

    def __repr__(self) -> str:
        from .html_views import score_summary, short_list

        b, t, length = self.importance.shape
        texts = short_list(self.texts) if self.texts is not None else "(token ids)"
        return (
            f"TextExplanation({b} images × {t} texts {texts}, importance [{b}, {t}, {length}], "
            f"n_layers={self.options.get('n_layers')}, heads={self.options.get('heads')!r}, {score_summary(self.scores)})"
        )

    def _repr_html_(self) -> str:
        """Each text with its words shaded by importance, per image (the token positions' importance
        when the texts were token ids)."""
        from . import html_views, render

        b, t = self.scores.shape
        nb, nt = min(b, html_views.MAX_IMAGES), min(t, html_views.MAX_TEXTS)
        rows = []
        for j in range(nt):
            cells = [html.escape(self.texts[j]) if self.texts is not None else f"text {j}"]
            for i in range(nb):
                if self.alignments is not None:
                    view = render.text_html(self.words(i, j), text=self.texts[j] if self.texts is not None else None)
                else:
                    view = html.escape(" ".join(f"{v:.2f}" for v in self.importance[i, j].tolist()))
                cells.append(f"{view}{float(self.scores[i, j]):.4f}")
            rows.append(cells)
        caption = f"word importance and scores{html_views.more_note(nb, b, nt, t)}"
        return html_views.table(["text", *(f"image {i}" for i in range(nb))], rows, caption)


@dataclass(frozen=True)
class PairExplanation:
    """Both sides of one (image, text) pair: the paper's headline figure in one object.

    Attributes:
        visual: the image's :class:`ImageExplanation` (B = T = 1).
        textual: the caption's :class:`TextExplanation` (B = T = 1).
    """

    visual: ImageExplanation
    textual: TextExplanation

    @property
    def map(self) -> Tensor:
        """The raw visual map ``[h, w]`` float32."""
        return self.visual.maps[0, 0]

    @property
    def words(self) -> list[tuple[str, float]]:
        """``[(word, importance), …]`` of the caption (see :meth:`TextExplanation.words`)."""
        return self.textual.words(0, 0)

    @property
    def text(self) -> str:
        """The caption."""
        return self.textual.texts[0]

    def __repr__(self) -> str:
        h, w = self.map.shape
        words = ", ".join(f"{word}={value:.2f}" for word, value in self.words)
        return f"PairExplanation({self.text!r}, score {float(self.visual.scores[0, 0]):.4f}, map [{h}, {w}], words: {words})"

    def _repr_html_(self) -> str:
        """The visual map next to the caption's words shaded by importance."""
        from . import render

        return (
            '<div class="gradeclip-pair" style="display:flex;gap:12px;align-items:center">'
            f"{self.visual._repr_html_()}{render.text_html(self.words, text=self.text)}</div>"
        )
