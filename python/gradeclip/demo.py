"""``gradeclip demo``: explain a few real photos that ship with scikit-image, offline.

Writes, under the output directory: ``overlays/<image>__<text>.png`` (every image against every
prompt), ``words/<image>.png`` (the words of each image's caption shaded by importance) and
``index.html`` tying them together with the scores.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from . import render
from .explainer import Explainer
from .loading import load

DEFAULT_MODEL = "ViT-B-16"


@dataclass(frozen=True)
class Photo:
    """A demo photo: its scikit-image loader name, a short prompt and a longer caption."""

    name: str
    prompt: str
    caption: str


PHOTOS = (
    Photo("astronaut", "an astronaut", "an astronaut in a white suit in front of a flag"),
    Photo("chelsea", "a cat", "a tabby cat looking at the camera"),
    Photo("coffee", "a cup of coffee", "a cup of coffee on a saucer"),
    Photo("rocket", "a rocket", "a rocket standing on the launch pad"),
)


@dataclass(frozen=True)
class DemoReport:
    """What the demo wrote: the HTML page, the overlay files, the score table ``[B, T]`` and
    whether the model's weights were random."""

    index: Path
    overlays: list[Path]
    scores: np.ndarray
    random_weights: bool


def _center_crop(image: Image.Image, size: int) -> Image.Image:
    """Resize the shorter side to ``size`` (bicubic) and take the central ``size``×``size`` square —
    the geometry of CLIP's evaluation preprocessing, so maps line up with the displayed pixels."""
    scale = size / min(image.size)
    resized = image.resize((max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.Resampling.BICUBIC)
    left, top = (resized.width - size) // 2, (resized.height - size) // 2
    return resized.crop((left, top, left + size, top + size))


def _photos() -> list[tuple[Photo, Image.Image]]:
    from skimage import data

    return [(photo, Image.fromarray(getattr(data, photo.name)()).convert("RGB")) for photo in PHOTOS]


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def run_demo(out_dir: str | os.PathLike[str], model_name: str = DEFAULT_MODEL, pretrained: str | None = None, device: str = "cpu") -> DemoReport:
    """Explain the demo photos against every prompt (visual) and their captions (textual).

    Returns a :class:`DemoReport`; the files are written under ``out_dir`` (created if needed).
    """
    out = Path(out_dir)
    (out / "overlays").mkdir(parents=True, exist_ok=True)
    (out / "words").mkdir(exist_ok=True)
    model, preprocess, tokenizer = load(model_name, pretrained=pretrained, device=device)
    explainer = Explainer(model, tokenizer)
    size = explainer.image_tower.visual.image_size[0]  # type: ignore[attr-defined]
    photos = _photos()
    crops = [_center_crop(image, size) for _, image in photos]
    batch = torch.stack([preprocess(image) for _, image in photos]).to(device)
    prompts = [photo.prompt for photo, _ in photos]
    visual = explainer.explain_image(batch, prompts)
    textual = explainer.explain_text(batch, [photo.caption for photo, _ in photos], n_layers=min(8, len(explainer.text_tower.blocks)))

    pixels = [np.asarray(crop) for crop in crops]
    overlay_paths, overlay_images, overlay_maps = [], [], []
    for b, (photo, _) in enumerate(photos):
        for t, other in enumerate(PHOTOS):
            overlay_paths.append(out / "overlays" / f"{photo.name}__{other.name}.png")
            overlay_images.append(pixels[b])
            overlay_maps.append(visual.maps[b, t].cpu().numpy())
    render.save_overlays(overlay_paths, overlay_images, overlay_maps)
    for b, (photo, _) in enumerate(photos):
        (out / "words" / f"{photo.name}.png").write_bytes(render.text_png(textual.words(b, b), text=photo.caption))

    scores = visual.scores.cpu().numpy()
    random_weights = pretrained is None
    _write_atomic(out / "index.html", _page(model_name, pretrained, photos, scores, textual, random_weights))
    return DemoReport(out / "index.html", overlay_paths, scores, random_weights)


def _page(model_name: str, pretrained: str | None, photos, scores: np.ndarray, textual, random_weights: bool) -> str:
    warning = (
        '<p style="background:#fdd;padding:0.6em;border:1px solid #c00"><b>Random weights.</b> '
        f"{html.escape(model_name)} was built without pretrained weights, so these maps and scores show "
        "the machinery, not what a trained CLIP attends to. Pass <code>--pretrained</code> with an "
        "open_clip tag or a local checkpoint for real explanations.</p>"
        if random_weights
        else ""
    )
    head = "".join(f"<th>{html.escape(p.prompt)}</th>" for p in PHOTOS)
    rows = []
    for b, (photo, _) in enumerate(photos):
        cells = "".join(
            f'<td><img src="overlays/{photo.name}__{other.name}.png" width="160"><br>cos = {scores[b, t]:.3f}</td>'
            for t, other in enumerate(PHOTOS)
        )
        words = render.text_html(textual.words(b, b), text=photo.caption)
        rows.append(f"<tr><th>{html.escape(photo.name)}</th>{cells}</tr><tr><td></td><td colspan=\"{len(PHOTOS)}\">{words}</td></tr>")
    return (
        "<!doctype html><meta charset=\"utf-8\"><title>gradeclip demo</title>"
        "<body style=\"font-family:sans-serif\"><h1>gradeclip demo</h1>"
        f"<p>Model: {html.escape(model_name)} ({html.escape(pretrained or 'random weights')}). "
        "Grad-ECLIP visual maps (JET overlay, each photo against each prompt) and textual word importances "
        "(each photo against its caption).</p>"
        f"{warning}<table><tr><th></th>{head}</tr>{''.join(rows)}</table></body>"
    )
