"""Attribute diagnostics (paper §5.2, SPEC §11) on scenes with exact ground truth: does adding an
attribute word ("ATTR NOUN" vs "NOUN") move the map onto the objects that have the attribute, and
how much of the text's importance does the attribute word get?

A scene is an image, one mask per object and each object's attribute values; the synthetic world
(:mod:`gradeclip.synth`) gives these exactly for colour, shape, size and position (quadrant).
Per object and attribute type the probe and base texts are:

| type | probe | base | attribute words | noun words |
|---|---|---|---|---|
| colour | "a red circle" | "a circle" | red | circle |
| shape | "a red circle" | "red" | circle | red |
| size | "a small circle" | "a circle" | small | circle |
| position | "a circle in the top left" | "a circle" | top left | circle |

The probe's targets are the objects having every value the probe states (the object itself and
any identical ones); a probe is *discriminating* when its base also fits another object, so that
only the attribute can pick the target.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from PIL import Image

from ..data import load_image, load_mask
from ..errors import InputError
from ..explainer import Explainer
from ..preprocessing import mask_in_geometry
from ..targets import explain_subsets, explain_words
from .common import localise, overlays, seen_pixels, text_layers
from .figures import map_grid

ATTRIBUTE_TYPES = ("colour", "shape", "size", "position")


@dataclass(frozen=True)
class LabelledScene:
    """An image with exact object masks and attribute values.

    Attributes:
        image: preprocessed ``[3, H, W]`` float tensor (the model's input).
        masks: ``[K, H', W']`` bool, one per object (any size; maps are upsampled to it).
        objects: per object, its values: ``colour``, ``shape``, ``size``, ``region`` (the
            quadrant's words, e.g. ``"top left"``).
        name: how tables and figures name the scene.
    """

    image: torch.Tensor
    masks: np.ndarray
    objects: tuple[dict[str, str], ...]
    name: str


@dataclass(frozen=True)
class Probe:
    """One probe of one object: texts, attribute and noun words, the targets' mask."""

    scene: int
    obj: int
    kind: str
    value: str
    probe: str
    base: str
    attribute_words: tuple[str, ...]
    noun_words: tuple[str, ...]
    target: np.ndarray = field(repr=False)
    discriminating: bool


def _article(words: list[str]) -> str:
    return " ".join(["an" if words[0][0] in "aeiou" else "a", *words])


def _texts(obj: dict[str, str], kind: str) -> tuple[str, str, tuple[str, ...], tuple[str, ...], tuple[str, ...], tuple[str, ...]]:
    """(probe, base, attribute words, noun words, attributes the probe states, attributes the base states)."""
    colour, shape = obj["colour"], obj["shape"]
    if kind == "colour":
        return _article([colour, shape]), _article([shape]), (colour,), (shape,), ("colour", "shape"), ("shape",)
    if kind == "shape":
        return _article([colour, shape]), colour, (shape,), (colour,), ("colour", "shape"), ("colour",)
    if kind == "size":
        return _article([obj["size"], shape]), _article([shape]), (obj["size"],), (shape,), ("size", "shape"), ("shape",)
    region = obj["region"]
    return f"{_article([shape])} in the {region}", _article([shape]), tuple(region.split()), (shape,), ("region", "shape"), ("shape",)


def probes(scenes: Sequence[LabelledScene], kinds: Sequence[str] = ATTRIBUTE_TYPES) -> list[Probe]:
    """Every object's probe of every attribute type in ``kinds``, scene by scene."""
    unknown = sorted(set(kinds) - set(ATTRIBUTE_TYPES))
    if unknown:
        raise InputError(f"unknown attribute type(s) {unknown}; choose from {', '.join(ATTRIBUTE_TYPES)}")
    out = []
    for s, scene in enumerate(scenes):
        for k, obj in enumerate(scene.objects):
            for kind in kinds:
                probe, base, attr, noun, stated, base_stated = _texts(obj, kind)
                fits = [all(o[a] == obj[a] for a in stated) for o in scene.objects]
                fits_base = [all(o[a] == obj[a] for a in base_stated) for o in scene.objects]
                target = np.any(scene.masks[np.flatnonzero(fits)], axis=0)
                value = obj["region" if kind == "position" else kind]
                discriminating = any(b and not f for f, b in zip(fits, fits_base))
                out.append(Probe(s, k, kind, value, probe, base, attr, noun, target, discriminating))
    return out


@dataclass
class AttributeReport:
    """The attribute diagnostics: one record per probe, and per-type tables.

    ``records``: per probe, ``scene``, ``object``, ``type``, ``value``, ``probe``, ``base``,
    ``discriminating``, Point Game hit and energy-PG of the base and the probe map against the
    targets (``pg_base``, ``pg_probe``, ``energy_base``, ``energy_probe``), and the attribute
    words' share of the attribute + noun words' importance in the probe's textual explanation
    (``attribute_share``; NaN when both are zero).
    """

    records: list[dict[str, Any]]

    def table(self, kind: str) -> list[dict[str, Any]]:
        """Rows for one attribute type: one per value, then ``all``: counts and the means of every
        measure, over all probes and over the discriminating ones (``disc_*``)."""
        mine = [r for r in self.records if r["type"] == kind]
        values = sorted({r["value"] for r in mine})
        return [self._summary(v, [r for r in mine if r["value"] == v]) for v in values] + [self._summary("all", mine)]

    @staticmethod
    def _summary(name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
        def mean(key: str, subset: list[dict[str, Any]]) -> float:
            values = [r[key] for r in subset if not np.isnan(r[key])]
            return float(np.mean(values)) if values else float("nan")

        disc = [r for r in rows if r["discriminating"]]
        out: dict[str, Any] = {"value": name, "probes": len(rows), "discriminating": len(disc)}
        for key in ("pg_base", "pg_probe", "energy_base", "energy_probe"):
            out[key] = mean(key, rows)
        for key in ("pg_base", "pg_probe", "energy_base", "energy_probe"):
            out[f"disc_{key}"] = mean(key, disc)
        out["attribute_share"] = mean("attribute_share", rows)
        return out

    def markdown(self) -> str:
        """Every type's table as Markdown (one table per type; NaN shows as —)."""
        heads = ["value", "probes", "disc.", "PG base→probe", "energy base→probe", "disc. PG base→probe", "disc. energy base→probe", "attr. share"]
        parts = []
        kinds = [k for k in ATTRIBUTE_TYPES if any(r["type"] == k for r in self.records)]
        for kind in kinds:
            lines = [f"**{kind}**", "", "| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
            for row in self.table(kind):
                lines.append(
                    "| "
                    + " | ".join(
                        [
                            str(row["value"]),
                            str(row["probes"]),
                            str(row["discriminating"]),
                            _pair(row["pg_base"], row["pg_probe"]),
                            _pair(row["energy_base"], row["energy_probe"]),
                            _pair(row["disc_pg_base"], row["disc_pg_probe"]),
                            _pair(row["disc_energy_base"], row["disc_energy_probe"]),
                            _num(row["attribute_share"]),
                        ]
                    )
                    + " |"
                )
            parts.append("\n".join(lines))
        return "\n\n".join(parts) + "\n"


def _num(x: float) -> str:
    return "—" if np.isnan(x) else f"{x:.3f}"


def _pair(a: float, b: float) -> str:
    return "—" if np.isnan(a) else f"{_num(a)} → {_num(b)}"


def attributes(
    explainer: Explainer,
    scenes: Sequence[LabelledScene],
    *,
    kinds: Sequence[str] = ATTRIBUTE_TYPES,
    n_text_layers: int | None = None,
    compat: str | None = None,
    max_targets: int = 32,
    figure: str | os.PathLike[str] | None = None,
    figure_scene: int = 0,
    **options: Any,
) -> AttributeReport:
    """Attribute diagnostics over ``scenes`` (SPEC §11, paper §5.2 / Fig. 14).

    Visual maps of every probe and base text, and the textual explanation of every probe, are
    computed for groups of scenes at a time (each group one ``explain_image`` and one
    ``explain_text`` call, ``max_targets`` texts at most).

    Args:
        explainer: the model's explainer (with its tokenizer).
        scenes: the labelled scenes (:func:`synth_scenes` makes them from the synthetic world).
        kinds: attribute types to probe.
        n_text_layers: text-tower blocks explained (default: 8, capped at the tower's depth).
        compat: ``"authors"``: both sides in the authors' released form (SPEC §12).
        max_targets: the most texts one call explains.
        figure: optional PNG path: per type, scene ``figure_scene``'s image with base and probe maps (Fig. 14).
        **options: Grad-ECLIP options for ``explain_image`` (``heads``, ``qk_space``, ...).

    Returns:
        :class:`AttributeReport`.
    """
    if not scenes:
        raise InputError("attributes needs at least one scene")
    all_probes = probes(scenes, kinds)
    texts = list(dict.fromkeys(t for p in all_probes for t in (p.probe, p.base)))
    column = {t: i for i, t in enumerate(texts)}
    bank, _ = explainer.encode_texts(texts)
    by_scene: list[list[Probe]] = [[] for _ in scenes]
    for p in all_probes:
        by_scene[p.scene].append(p)
    wanted = [list(dict.fromkeys(column[t] for p in ps for t in (p.probe, p.base))) for ps in by_scene]
    images = torch.stack([s.image for s in scenes]).to(explainer.image_tower.device)
    maps = explain_subsets(explainer, images, wanted, bank, max_targets, "gradeclip", {**options, "compat": compat})
    text_options = {"n_layers": text_layers(explainer, n_text_layers), "compat": compat}
    word_lists = explain_words(explainer, images, [list(dict.fromkeys(p.probe for p in ps)) for ps in by_scene], max_targets, text_options)
    records = []
    for s, ps in enumerate(by_scene):
        scene_maps = {texts[t]: maps[s][0][j].astype(np.float32) for j, t in enumerate(wanted[s])}
        scene_words = dict(zip(dict.fromkeys(p.probe for p in ps), word_lists[s]))
        pg, energy = localise(np.stack([scene_maps[t] for p in ps for t in (p.base, p.probe)]), [p.target for p in ps for _ in (0, 1)])
        for i, p in enumerate(ps):
            importance = dict(scene_words[p.probe])
            attr = sum(importance.get(w, 0.0) for w in p.attribute_words)
            noun = sum(importance.get(w, 0.0) for w in p.noun_words)
            records.append(
                {
                    "scene": scenes[s].name,
                    "object": p.obj,
                    "type": p.kind,
                    "value": p.value,
                    "probe": p.probe,
                    "base": p.base,
                    "discriminating": p.discriminating,
                    "pg_base": float(pg[2 * i]),
                    "pg_probe": float(pg[2 * i + 1]),
                    "energy_base": float(energy[2 * i]),
                    "energy_probe": float(energy[2 * i + 1]),
                    "attribute_share": attr / (attr + noun) if attr + noun > 0 else float("nan"),
                }
            )
    if figure is not None:
        _figure(explainer, scenes[figure_scene], by_scene[figure_scene], maps[figure_scene][0], [texts[t] for t in wanted[figure_scene]], word_lists[figure_scene], figure)
    return AttributeReport(records)


def _figure(
    explainer: Explainer, scene: LabelledScene, ps: list[Probe], maps: np.ndarray, names: list[str], words: list[list[tuple[str, float]]], path: str | os.PathLike[str]
) -> None:
    """Per attribute type (a row): the image, then base and probe overlays of each object (paper Fig. 14)."""
    pixels = seen_pixels(explainer, scene.image[None])[0]
    drawn = overlays(pixels, maps.astype(np.float32))
    at = {n: i for i, n in enumerate(names)}
    importance = dict(zip(dict.fromkeys(p.probe for p in ps), words))
    rows = []
    for kind in dict.fromkeys(p.kind for p in ps):
        row = [(pixels, f"{scene.name}: {kind}")]
        for p in (p for p in ps if p.kind == kind):
            share = dict(importance[p.probe])
            attr = " ".join(f"{w} {share.get(w, 0.0):.2f}" for w in p.attribute_words)
            row += [(drawn[at[p.base]], f'"{p.base}"'), (drawn[at[p.probe]], f'"{p.probe}"\n[{attr}]')]
        rows.append(row)
    map_grid(rows, path, title="base vs probe maps; [attribute word importance]")


def synth_scenes(count: int, *, split: str = "test", seed: int = 0, min_objects: int = 2, preprocess: Any) -> list[LabelledScene]:
    """The first ``count`` scenes of the synthetic world's ``split`` with at least ``min_objects``
    objects, as :class:`LabelledScene` (``preprocess``: the model's image transform)."""
    from ..synth import make_scene

    out: list[LabelledScene] = []
    index = 0
    while len(out) < count:
        scene = make_scene(index, split, seed)
        index += 1
        if len(scene.objects) < min_objects:
            continue
        objects = tuple({"colour": o.colour, "shape": o.shape, "size": o.size, "region": o.region} for o in scene.objects)
        out.append(LabelledScene(preprocess(scene.pil()), scene.masks, objects, f"{split}-{scene.index}"))
    return out


#: every object's labels in ``attributes.json`` (all probe texts name colour and shape; size and region feed their types)
LABEL_KEYS = ("colour", "shape", "size", "region")


def labelled_scenes(folder: str | os.PathLike[str], *, preprocess: Any) -> list[LabelledScene]:
    """The scenes ``folder/attributes.json`` describes, as :class:`LabelledScene`.

    The file is a list of ``{"image": PATH, "objects": [{"mask": PATH, "colour": ..., "shape": ...,
    "size": ..., "region": ...}, ...]}`` (paths relative to ``folder``; each mask a binary PNG of its
    image's size; every object needs all four labels as strings). Images and masks are decoded by
    :mod:`gradeclip.data`; each image goes through ``preprocess`` (the model's transform: resize of the
    shorter side and centre crop) and each mask through the same geometry (:func:`mask_in_geometry`).
    Scenes are named by their image path. Returns one scene per entry, in file order.

    Raises:
        InputError: naming the file, the entry and the key that is missing or malformed, or an image
            and mask of different sizes; :class:`UnreadableImage` naming an unreadable image or mask.
    """
    root = os.fspath(folder)
    index = os.path.join(root, "attributes.json")
    try:
        with open(index, encoding="utf-8") as f:
            entries = json.load(f)
    except OSError as exc:
        raise InputError(f"--folder {root!r}: cannot read {index!r}: {exc.strerror or exc}") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{index!r} is not valid JSON: {exc}") from exc
    if not isinstance(entries, list) or not entries:
        raise InputError(f"{index!r} must be a non-empty list of {{\"image\": ..., \"objects\": [...]}} entries")
    out = []
    for n, entry in enumerate(entries):
        where = f"{index!r} entry {n}"
        if not isinstance(entry, dict) or not isinstance(entry.get("image"), str):
            raise InputError(f"{where}: needs an \"image\" path (a string)")
        objects = entry.get("objects")
        if not isinstance(objects, list) or not objects:
            raise InputError(f"{where} ({entry['image']}): needs a non-empty \"objects\" list")
        pixels = load_image(os.path.join(root, entry["image"]))
        image = preprocess(Image.fromarray(pixels))
        masks, labels = [], []
        for k, obj in enumerate(objects):
            at = f"{where} ({entry['image']}) object {k}"
            missing = [key for key in ("mask", *LABEL_KEYS) if not isinstance(obj, dict) or not isinstance(obj.get(key), str) or not obj[key]]
            if missing:
                raise InputError(f"{at}: missing or non-string key(s) {', '.join(missing)}; every object needs mask, {', '.join(LABEL_KEYS)}")
            mask = load_mask(os.path.join(root, obj["mask"]), "binary")
            if mask.shape != pixels.shape[:2]:
                raise InputError(f"{at}: mask {obj['mask']!r} is {mask.shape[0]}×{mask.shape[1]} but the image is {pixels.shape[0]}×{pixels.shape[1]}")
            masks.append(mask_in_geometry(mask, image.shape[-1]))
            labels.append({key: obj[key] for key in LABEL_KEYS})
        out.append(LabelledScene(image, np.stack(masks), tuple(labels), entry["image"]))
    return out
