"""Word importances rendered as the caption with each word's background shaded (SPEC §9).

Both renderings take the ``[(word, importance), …]`` list of :meth:`TextExplanation.words` and
shade each word by its importance relative to the caption's most important word (white = 0, the
full colour = the maximum), so HTML and PNG show the same colours. Words are separated by one
space; pass the caption as ``text=`` to keep its own spacing (no space before a comma that was
written against its word).
"""

from __future__ import annotations

import html
import io
import math
import warnings
from collections.abc import Sequence
from typing import Any

from .errors import InputError

#: the colour of the most important word; less important words are blended towards white
SHADE = (244, 81, 30)
FONT = "DejaVuSans.ttf"  # looked up by Pillow in the system font folders; Pillow's own font otherwise
_NO_GLYPH = "\U0010fffd"  # a private-use code point: what a font draws for a character it lacks
_WARNED: set[tuple[str, str]] = set()  # (font, character) pairs already warned about


def _check_words(words: Sequence[tuple[str, float]]) -> list[tuple[str, float]]:
    checked = []
    for i, item in enumerate(words):
        if not (isinstance(item, (tuple, list)) and len(item) == 2 and isinstance(item[0], str)):
            raise InputError(f"words[{i}] must be a (word, importance) pair, got {item!r}")
        value = float(item[1])
        if not math.isfinite(value) or value < 0:
            raise InputError(f"words[{i}] has importance {item[1]!r}; importances must be finite and ≥ 0")
        checked.append((item[0], value))
    return checked


def word_colours(words: Sequence[tuple[str, float]]) -> list[tuple[int, int, int]]:
    """The RGB background of each word: white blended towards :data:`SHADE` by importance / max
    importance (all white when every importance is 0)."""
    checked = _check_words(words)
    top = max((v for _, v in checked), default=0.0)
    weights = [v / top if top > 0 else 0.0 for _, v in checked]
    return [tuple(round(255 + w * (c - 255)) for c in SHADE) for w in weights]  # type: ignore[misc]


def spaces_before(words: Sequence[tuple[str, float]], text: str | None = None) -> list[bool]:
    """Whether a space goes before each word: after the first, always without ``text``; with the
    caption ``text``, only where the caption has a gap (the words are found in it in order)."""
    if text is None:
        return [i > 0 for i in range(len(words))]
    gaps, pos = [], 0
    for i, (word, _) in enumerate(words):
        found = text.find(word, pos)
        if found < 0:
            raise InputError(f"words[{i}] {word!r} does not occur in text after position {pos}; pass the caption the words came from")
        gaps.append(i > 0 and found > pos)
        pos = found + len(word)
    return gaps


def text_html(words: Sequence[tuple[str, float]], *, text: str | None = None) -> str:
    """A self-contained HTML snippet (one ``<div>``, inline styles, no scripts): the words in order,
    each in a ``<span>`` whose background is shaded by its importance and whose tooltip shows it.

    Args:
        words: ``[(word, importance), …]``, e.g. ``explanation.words(b, t)``.
        text: the caption, to reproduce its spacing (optional).
    """
    checked = _check_words(words)
    spans = []
    for (word, value), colour, space in zip(checked, word_colours(checked), spaces_before(checked, text)):
        spans.append(
            (" " if space else "")
            + f'<span style="background-color:#{colour[0]:02x}{colour[1]:02x}{colour[2]:02x};'
            f'padding:0.1em 0.15em;border-radius:0.2em" title="{value:.4f}">{html.escape(word)}</span>'
        )
    return '<div class="gradeclip-text" style="font-family:sans-serif;line-height:2;color:#000">' + "".join(spans) + "</div>"


def missing_glyphs(font: Any, text: str) -> list[str]:
    """The distinct characters of ``text`` (whitespace aside) that ``font`` draws as its "missing
    glyph" box: those drawn exactly like a private-use code point no font covers."""
    missing = font.getmask(_NO_GLYPH)
    reference = (missing.size, bytes(missing))
    found = []
    for char in dict.fromkeys(text):
        if not char.isspace():
            mask = font.getmask(char)
            if (mask.size, bytes(mask)) == reference:
                found.append(char)
    return found


def _warn_missing_glyphs(font: Any, name: str, text: str) -> None:
    """Warn (once per font and character) when ``font`` has no glyphs for characters of ``text``."""
    missing = [c for c in missing_glyphs(font, text) if (name, c) not in _WARNED]
    if not missing:
        return
    _WARNED.update((name, c) for c in missing)
    shown = " ".join(missing[:10]) + (f" … ({len(missing)} in all)" if len(missing) > 10 else "")
    warnings.warn(
        f"the font {name!r} has no glyphs for {shown}: they are drawn as boxes. Pass font_path= a TrueType/OpenType "
        "font that has them (e.g. Noto Sans CJK for Chinese/Japanese/Korean, Noto Color Emoji; `fc-list :lang=ja` lists "
        "installed ones), or use render.text_html, which the browser draws with its own fonts",
        UserWarning,
        stacklevel=3,
    )


def text_png(
    words: Sequence[tuple[str, float]],
    *,
    text: str | None = None,
    width: int = 640,
    font_size: int = 20,
    font_path: str | None = None,
) -> bytes:
    """The same rendering as :func:`text_html` as PNG bytes (RGB), wrapped to ``width`` pixels.

    Args:
        words: ``[(word, importance), …]``.
        text: the caption, to reproduce its spacing (optional).
        width: image width in pixels; lines wrap at word boundaries.
        font_size: in pixels.
        font_path: a TrueType font; default DejaVu Sans when the system has it, else Pillow's
            built-in font (which has no glyphs for many non-Latin scripts). Characters the font
            lacks (CJK, many emoji) are drawn as boxes, with a ``UserWarning`` (once per font and
            character) saying to pass a font that has them.
    """
    from PIL import Image, ImageDraw, ImageFont

    checked = _check_words(words)
    if width < 2 * font_size or font_size < 4:
        raise InputError(f"width {width} and font_size {font_size} leave no room to draw (need font_size ≥ 4, width ≥ 2·font_size)")
    font: ImageFont.FreeTypeFont | ImageFont.ImageFont
    try:
        font = ImageFont.truetype(font_path or FONT, font_size)
    except OSError:
        if font_path is not None:
            raise InputError(f"cannot read the font {font_path!r}") from None
        font = ImageFont.load_default(font_size)
    _warn_missing_glyphs(font, font_path or FONT, "".join(word for word, _ in checked))
    margin, pad = font_size // 2, max(1, font_size // 8)
    line = round(font_size * 1.6)
    space = font.getlength(" ")
    boxes, x, y = [], float(margin), margin
    for (word, _), gap in zip(checked, spaces_before(checked, text)):
        advance = font.getlength(word)
        start = x + (space if gap else 0)
        if gap and start + advance > width - margin and x > margin:
            start, y = float(margin), y + line
        boxes.append((start, y, advance))
        x = start + advance
    image = Image.new("RGB", (width, y + line + margin), "white")
    draw = ImageDraw.Draw(image)
    for (word, _), colour, (left, top, advance) in zip(checked, word_colours(checked), boxes):
        draw.rectangle((left - pad, top, left + advance + pad, top + line - 2 * pad), fill=colour)
        draw.text((left, top + line / 2 - pad), word, fill="black", font=font, anchor="lm")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
