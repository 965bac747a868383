"""How results look in Jupyter: concise one-line summaries and small HTML views with inline images.

The HTML views (``_repr_html_`` of the result types) show at most :data:`MAX_IMAGES` images ×
:data:`MAX_TEXTS` texts; each picture is a PNG (drawn by :mod:`gradeclip.render`) embedded as
base64 and scaled down to at most :data:`THUMBNAIL` pixels on its longer side; word importances
are :func:`gradeclip.render.text_html`. Nothing here runs scripts or reaches the network.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

import numpy as np

MAX_IMAGES = 4
MAX_TEXTS = 6
THUMBNAIL = 224  # most pixels on the longer side of a picture in the HTML view
SMALLEST = 96  # smaller pictures (tiny model inputs) are shown enlarged to this many pixels, cells kept sharp
_STYLE = "font-family:sans-serif;font-size:13px;border-collapse:collapse"
_CELL = "padding:4px;vertical-align:top;text-align:center;border:1px solid #ddd"


def short_list(values: Sequence[Any], limit: int = 3) -> str:
    """``['a', 'b', 'c', … 7 more]``: the first ``limit`` values' reprs and how many are left out."""
    shown = [repr(v) for v in values[:limit]]
    if len(values) > limit:
        shown.append(f"… {len(values) - limit} more")
    return "[" + ", ".join(shown) + "]"


def score_summary(scores: Any) -> str:
    """``scores [B, T] 0.123…0.456`` (the range of a score tensor, for a repr)."""
    values = scores.detach().float().cpu()
    if values.numel() == 0:
        return f"scores {list(values.shape)}"
    return f"scores {list(values.shape)} {float(values.min()):.3f}…{float(values.max()):.3f}"


def png_img(pixels: np.ndarray, title: str = "") -> str:
    """An ``<img>`` tag showing uint8 RGB ``pixels`` ``[H, W, 3]`` as an embedded PNG: downscaled
    (bilinear) to at most :data:`THUMBNAIL` pixels on its longer side; a smaller picture keeps its
    pixels and is shown enlarged (pixelated) to :data:`SMALLEST`."""
    from PIL import Image

    from . import render

    height, width = pixels.shape[:2]
    scale = THUMBNAIL / max(height, width)
    if scale < 1.0:
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        pixels = np.ascontiguousarray(np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR)))
    shown = max(1.0, SMALLEST / max(pixels.shape[:2]))
    data = base64.b64encode(render.encode_png(pixels[None])[0]).decode("ascii")
    return (
        f'<img src="data:image/png;base64,{data}" alt="{html.escape(title)}" title="{html.escape(title)}" width="{round(pixels.shape[1] * shown)}" '
        f'height="{round(pixels.shape[0] * shown)}" style="image-rendering:pixelated"/>'
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]], caption: str) -> str:
    """An HTML table with ``header`` cells (escaped text) and ``rows`` of raw HTML cells."""
    head = "".join(f'<th style="{_CELL}">{html.escape(h)}</th>' for h in header)
    body = "".join("<tr>" + "".join(f'<td style="{_CELL}">{c}</td>' for c in row) + "</tr>" for row in rows)
    return (
        f'<table class="gradeclip" style="{_STYLE}"><caption style="text-align:left;padding:2px">{html.escape(caption)}</caption>'
        f"<tr>{head}</tr>{body}</table>"
    )


def more_note(shown_images: int, images: int, shown_texts: int, texts: int) -> str:
    """``" (showing 4 of 10 images, 6 of 20 texts)"`` when the view is cut, else ``""``."""
    parts = [f"{a} of {b} {what}" for a, b, what in ((shown_images, images, "images"), (shown_texts, texts, "texts")) if a < b]
    return f" (showing {', '.join(parts)})" if parts else ""
