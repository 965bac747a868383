"""``gradeclip demo``: explain a few held-out synthetic scenes and the real photos that ship with
scikit-image, offline, with the embedded ``gradeclip-synth`` model by default.

Writes, under the output directory: ``scenes/<scene>__o<k>.png`` (each synthetic scene against the
caption that picks out its object ``k``), ``overlays/<image>__<text>.png`` (every photo against
every prompt, over the original photo at its own size with the border the model's crop cut
away dimmed: :meth:`ImageExplanation.save`), ``words/<name>.png`` (the words of each scene's and photo's caption shaded by
importance) and ``index.html`` tying them together with the scores.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import render
from .explainer import Explainer
from .files import write_bytes, write_text
from .loading import SYNTH_MODEL, load
from .synth import examples

DEFAULT_MODEL = SYNTH_MODEL
SCENES = 4  # held-out synthetic scenes the demo explains
DISPLAY_SIZE = 224  # scene overlays are drawn at least this large (the tiny model sees 64 px)


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
    """What the demo wrote: the HTML page, the overlay files (synthetic scenes, then photos), the
    photos' score table ``[B, T]`` and whether the model's weights were random."""

    index: Path
    overlays: list[Path]
    scores: np.ndarray
    random_weights: bool


def _photos() -> list[tuple[Photo, Image.Image]]:
    from skimage import data

    return [(photo, Image.fromarray(getattr(data, photo.name)()).convert("RGB")) for photo in PHOTOS]


def has_random_weights(model_name: str, pretrained: str | None) -> bool:
    """Whether :func:`~gradeclip.loading.load` gives ``model_name`` random weights: an open_clip
    architecture without ``pretrained`` (``gradeclip-synth`` loads its shipped weights)."""
    return pretrained is None and model_name != SYNTH_MODEL


def run_demo(out_dir: str | os.PathLike[str], model_name: str = DEFAULT_MODEL, pretrained: str | None = None, device: str = "cpu") -> DemoReport:
    """Explain :data:`SCENES` held-out synthetic scenes (each against the caption of each of its
    objects, and its full caption word by word) and the demo photos (against every prompt, and
    their captions word by word).

    Returns a :class:`DemoReport`; the files are written under ``out_dir`` (created if needed).
    """
    out = Path(out_dir)
    for sub in ("scenes", "overlays", "words"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    model, preprocess, tokenizer = load(model_name, pretrained=pretrained, device=device)
    explainer = Explainer(model, tokenizer)
    size = explainer.image_tower.visual.image_size[0]  # type: ignore[attr-defined]
    display = max(size, DISPLAY_SIZE)
    text_layers = min(8, len(explainer.text_tower.blocks))

    # synthetic scenes: one visual map per object (its referring caption), words of the full caption
    scenes = examples(SCENES)
    scene_rows = []
    scene_paths, scene_images, scene_maps = [], [], []
    for e, example in enumerate(scenes):
        image = example.scene.pil()
        batch = preprocess(image)[None].to(device)
        shown = np.asarray(image.resize((display, display), Image.Resampling.NEAREST))
        referring = [(k, c.text) for k, c in enumerate(example.referring) if c is not None]
        visual = explainer.explain_image(batch, [text for _, text in referring])
        cells = []
        for t, (k, text) in enumerate(referring):
            path = out / "scenes" / f"scene{e}__o{k}.png"
            scene_paths.append(path)
            scene_images.append(shown)
            scene_maps.append(visual.maps[0, t].cpu().numpy())
            cells.append((path.relative_to(out).as_posix(), text, float(visual.scores[0, t])))
        textual = explainer.explain_text(batch, [example.caption.text], n_layers=text_layers)
        words = textual.words(0, 0)
        write_bytes(out / "words" / f"scene{e}.png", render.text_png(words, text=example.caption.text))
        scene_rows.append((f"scene{e}", example, cells, render.text_html(words, text=example.caption.text)))
    render.save_overlays(scene_paths, scene_images, scene_maps)

    # real photos: every photo against every prompt, and each photo's caption word by word
    photos = _photos()
    images = [image for _, image in photos]  # given as PIL images: the overlays are drawn on the originals
    visual = explainer.explain_image(images, [photo.prompt for photo, _ in photos])
    textual = explainer.explain_text(images, [photo.caption for photo, _ in photos], n_layers=text_layers)
    overlay_paths = []
    for b, (photo, _) in enumerate(photos):
        for t, other in enumerate(PHOTOS):
            overlay_paths.append(out / "overlays" / f"{photo.name}__{other.name}.png")
            visual.save(overlay_paths[-1], b, t)
    for b, (photo, _) in enumerate(photos):
        write_bytes(out / "words" / f"{photo.name}.png", render.text_png(textual.words(b, b), text=photo.caption))

    scores = visual.scores.cpu().numpy()
    random_weights = has_random_weights(model_name, pretrained)
    page = _page(model_name, pretrained, scene_rows, photos, scores, textual, random_weights)
    write_text(out / "index.html", page)
    return DemoReport(out / "index.html", scene_paths + overlay_paths, scores, random_weights)


def _page(model_name: str, pretrained: str | None, scene_rows, photos, scores: np.ndarray, textual, random_weights: bool) -> str:
    warning = (
        '<p style="background:#fdd;padding:0.6em;border:1px solid #c00"><b>Random weights.</b> '
        f"{html.escape(model_name)} was built without pretrained weights, so these maps and scores show "
        "the machinery, not what a trained CLIP attends to. Pass <code>--pretrained</code> with an "
        "open_clip tag or a local checkpoint for real explanations.</p>"
        if random_weights
        else ""
    )
    weights = "random weights" if random_weights else (pretrained or "shipped weights")
    synth_note = (
        "<p>gradeclip-synth was trained only on the synthetic world below (coloured shapes, "
        "64&nbsp;px); it has never seen a photo and knows only the world's words (colours, shapes, "
        "sizes, quadrants), so its maps on the photos show the machinery on images far outside its "
        "training, not recognition.</p>"
        if model_name == SYNTH_MODEL
        else ""
    )
    pixelated = 'style="image-rendering:pixelated"'
    scene_html = []
    for name, example, cells, words in scene_rows:
        objects = ", ".join(html.escape(f"{o.size} {o.colour} {o.shape} ({o.region})") for o in example.scene.objects)
        tds = "".join(
            f'<td><img src="{src}" width="160" {pixelated}><br>{html.escape(text)}<br>cos = {cos:.3f}</td>' for src, text, cos in cells
        )
        scene_html.append(f"<tr><th>{name}</th>{tds}</tr><tr><td></td><td colspan=\"{max(1, len(cells))}\">{words}<br><small>drawn: {objects}</small></td></tr>")
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
        f"<p>Model: {html.escape(model_name)} ({html.escape(weights)}). "
        "Grad-ECLIP visual maps (JET overlay) and textual word importances.</p>"
        f"{warning}"
        "<h2>Synthetic scenes (held-out colour–shape pairs)</h2>"
        "<p>Each scene against the caption that picks out each of its objects, and its full caption word by word.</p>"
        f"<table>{''.join(scene_html)}</table>"
        "<h2>Photos</h2><p>Each photo against each prompt, and each photo's caption word by word.</p>"
        f"{synth_note}<table><tr><th></th>{head}</tr>{''.join(rows)}</table></body>"
    )
