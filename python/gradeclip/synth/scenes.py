"""Seeded procedural scenes: a textured background and 1–4 non-overlapping shapes with exact masks.

Scene ``index`` of split ``split`` under ``seed`` is a pure function of those three numbers
(``numpy.random.default_rng((seed, split_id, index))``), so any scene can be drawn again on its own,
in any order, on any machine with the same numpy and Pillow.

Objects never overlap, and each is drawn without anti-aliasing, so its mask is exactly the set of
pixels painted in its colour; every other pixel is the background.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .world import ALL_PAIRS, COLOURS, HELD_OUT_PAIRS, SIZES, SPLITS, TRAIN_PAIRS, clear_of_midlines, region_of

DEFAULT_SIZE = 64
MAX_OBJECTS = 4
PLACEMENT_TRIES = 60
COLOUR_JITTER = 18  # per channel, uniform ± this
FILL_NOISE = 4.0  # per-pixel Gaussian noise σ on object pixels
BACKGROUND_NOISE = 6.0  # per-pixel Gaussian noise σ on the background


@dataclass(frozen=True)
class SceneObject:
    """One drawn object.

    Attributes:
        colour, shape, size, region: its words (see :mod:`gradeclip.synth.world`).
        center: ``(x, y)`` in pixels (x right, y down).
        radius: radius in pixels of the circle the shape fits in.
        angle: rotation in degrees.
        rgb: the object's base fill colour after jitter.
    """

    colour: str
    shape: str
    size: str
    region: str
    center: tuple[float, float]
    radius: float
    angle: float
    rgb: tuple[int, int, int]


@dataclass(frozen=True)
class Scene:
    """A drawn scene.

    Attributes:
        image: ``[H, W, 3]`` uint8.
        background: ``[H, W, 3]`` uint8, the image before any object was drawn.
        masks: ``[K, H, W]`` bool, one exact instance mask per object, in ``objects`` order.
        objects: the K objects.
        split, index, seed, twin: where the scene comes from (draw it again with :func:`make_scene`).
    """

    image: np.ndarray
    background: np.ndarray
    masks: np.ndarray
    objects: tuple[SceneObject, ...]
    split: str
    index: int
    seed: int
    twin: bool = False

    def pil(self) -> Image.Image:
        """The image as a PIL RGB image."""
        return Image.fromarray(self.image, "RGB")


def _polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    """Vertices of a polygonal shape centred at ``(cx, cy)`` fitting in radius ``r``, rotated by ``angle`` degrees."""
    if shape == "square":
        pts = [(-1, -1), (1, -1), (1, 1), (-1, 1)]
        pts = [(0.72 * x, 0.72 * y) for x, y in pts]
    elif shape == "triangle":
        pts = [(math.cos(math.radians(a)), math.sin(math.radians(a))) for a in (-90, 30, 150)]
        pts = [(x, y + 0.12) for x, y in pts]
    elif shape == "star":
        pts = []
        for i in range(10):
            rad = 1.0 if i % 2 == 0 else 0.45
            a = math.radians(-90 + 36 * i)
            pts.append((rad * math.cos(a), rad * math.sin(a)))
    elif shape == "cross":
        w = 0.34
        pts = [(-w, -1), (w, -1), (w, -w), (1, -w), (1, w), (w, w), (w, 1), (-w, 1), (-w, w), (-1, w), (-1, -w), (-w, -w)]
    elif shape == "diamond":
        pts = [(0, -1), (0.62, 0), (0, 1), (-0.62, 0)]
    elif shape == "hexagon":
        pts = [(math.cos(math.radians(60 * i)), math.sin(math.radians(60 * i))) for i in range(6)]
    elif shape == "heart":
        pts = []
        for i in range(40):
            t = 2 * math.pi * i / 40
            x = 16 * math.sin(t) ** 3
            y = -(13 * math.cos(t) - 5 * math.cos(2 * t) - 2 * math.cos(3 * t) - math.cos(4 * t))
            pts.append((x / 17, (y + 2) / 17))
    else:
        raise InputError(f"unknown shape {shape!r}")
    c, s = math.cos(math.radians(angle)), math.sin(math.radians(angle))
    return [(cx + r * (c * x - s * y), cy + r * (s * x + c * y)) for x, y in pts]


def shape_mask(shape: str, center: tuple[float, float], radius: float, angle: float, size: int) -> np.ndarray:
    """The pixels a shape covers in a ``size``×``size`` image (no anti-aliasing): ``[size, size]`` bool."""
    canvas = Image.new("L", (size, size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = center
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=255)
    else:
        draw.polygon(_polygon(shape, cx, cy, radius, angle), fill=255)
    return np.asarray(canvas) > 0


@functools.lru_cache(maxsize=8)
def _pixel_grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    return yy, xx


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """A low-saturation textured background ``[size, size, 3]`` uint8: smooth noise, optional
    stripes or checks, and pixel noise."""
    level = rng.uniform(70, 185)
    tint = rng.uniform(-12, 12, size=3).astype(np.float32)
    coarse = rng.uniform(-35, 35, size=(4, 4)).astype(np.float32)
    base = np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.Resampling.BICUBIC), dtype=np.float32) + level
    kind = rng.integers(3)
    yy, xx = _pixel_grid(size)
    if kind == 1:  # stripes at a random angle
        theta = rng.uniform(0, math.pi)
        period = rng.uniform(5, 14)
        base += 14 * np.sign(np.sin((2 * math.pi / period) * (xx * math.cos(theta) + yy * math.sin(theta))))
    elif kind == 2:  # checks
        cell = int(rng.integers(4, 11))
        base += 12 * ((((xx // cell) + (yy // cell)) % 2) * 2 - 1)
    img = rng.standard_normal(size=(size, size, 3), dtype=np.float32)
    img *= BACKGROUND_NOISE
    img += base[..., None]
    img += tint
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def _rng(seed: int, split: str, index: int) -> np.random.Generator:
    if split not in SPLITS:
        raise InputError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if index < 0 or seed < 0:
        raise InputError(f"seed and index must be ≥ 0, got seed={seed}, index={index}")
    return np.random.default_rng((seed, SPLITS[split], index))


def _layout(rng: np.random.Generator, split: str, size: int) -> list[SceneObject]:
    """1–4 non-overlapping objects for ``split`` (fewer when one cannot be placed)."""
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    objects: list[SceneObject] = []
    for k in range(n):
        pool = HELD_OUT_PAIRS if (split == "test" and k == 0) else (ALL_PAIRS if split == "test" else TRAIN_PAIRS)
        colour, shape = pool[int(rng.integers(len(pool)))]
        size_name = ("small", "large")[int(rng.integers(2))]
        lo, hi = SIZES[size_name]
        radius = float(rng.uniform(lo, hi) * size)
        angle = 0.0 if shape == "circle" else float(rng.uniform(-15, 15))
        for _ in range(PLACEMENT_TRIES):
            cx, cy = (float(v) for v in rng.uniform(radius + 1, size - radius - 1, size=2))
            if clear_of_midlines(cx, cy, size) and _fits((cx, cy), radius, objects):
                break
        else:
            continue  # no room left: the scene keeps the objects already placed
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        objects.append(SceneObject(colour, shape, size_name, region_of(cx, cy, size), (cx, cy), radius, angle, rgb))  # type: ignore[arg-type]
    return objects


def _fits(center: tuple[float, float], radius: float, others: list[SceneObject]) -> bool:
    """Whether a shape of ``radius`` at ``center`` keeps 2 px clear of every other object's circle."""
    return all(math.hypot(center[0] - o.center[0], center[1] - o.center[1]) > radius + o.radius + 2 for o in others)


def _mirrored(objects: list[SceneObject], size: int) -> list[tuple[int, SceneObject]]:
    """Each way to move one object to another quadrant by mirroring its centre across a midline
    (or both) without touching the others: ``(index, moved object)``."""
    out = []
    for k, o in enumerate(objects):
        others = objects[:k] + objects[k + 1 :]
        x, y = o.center
        for center in ((size - x, y), (x, size - y), (size - x, size - y)):
            if _fits(center, o.radius, others):
                out.append((k, dataclasses.replace(o, center=center, region=region_of(*center, size))))
    return out


def _hard_negative(objects: list[SceneObject], rng: np.random.Generator, size: int) -> list[SceneObject]:
    """The same objects with one kind of change, so that only those words tell the two scenes
    apart: half the time (when possible) one object moves to another quadrant (its centre mirrored
    across a midline); otherwise shapes change — two objects swap shapes (a red circle and a blue
    star become a red star and a blue circle) when possible and a coin says so, else one object
    takes another shape. Every new colour–shape pair is a training pair."""
    moves = _mirrored(objects, size)
    if moves and rng.random() < 0.5:
        k, moved = moves[int(rng.integers(len(moves)))]
        return [moved if j == k else o for j, o in enumerate(objects)]
    allowed = set(TRAIN_PAIRS)
    swaps = [
        (j, k)
        for j in range(len(objects))
        for k in range(j + 1, len(objects))
        if objects[j].shape != objects[k].shape
        and (objects[j].colour, objects[k].shape) in allowed
        and (objects[k].colour, objects[j].shape) in allowed
    ]
    changes = [(k, s) for k, o in enumerate(objects) for c, s in TRAIN_PAIRS if c == o.colour and s != o.shape]
    out = list(objects)
    if swaps and rng.random() < 0.5:
        j, k = swaps[int(rng.integers(len(swaps)))]
        out[j] = dataclasses.replace(objects[j], shape=objects[k].shape)
        out[k] = dataclasses.replace(objects[k], shape=objects[j].shape)
    else:
        k, shape = changes[int(rng.integers(len(changes)))]
        out[k] = dataclasses.replace(objects[k], shape=shape)
    return out


def make_scene(index: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE, twin: bool = False) -> Scene:
    """Draw scene ``index`` of ``split`` (``"train"``, ``"val"``, ``"test"``) under ``seed``.

    ``train``/``val`` scenes use only training colour–shape pairs; a ``test`` scene's first object
    is a held-out pair and its others use any pair. 1–4 objects (fewer when one cannot be placed
    without overlapping the others), each small or large, rotated by up to ±15°.

    ``twin=True`` (``train``/``val`` only) draws the scene's hard negative: the same background and
    objects with one object moved to another quadrant or shapes changed (:func:`_hard_negative`),
    so that only those words tell the two apart. Training puts each scene and its twin in the
    same batch.

    Returns:
        :class:`Scene` with a ``[size, size, 3]`` uint8 image and ``[K, size, size]`` bool masks.
    """
    if size < 32:
        raise InputError(f"scene size must be at least 32 px, got {size}")
    if twin and split == "test":
        raise InputError("twins are a training device: only train and val scenes have them")
    rng = _rng(seed, split, index)
    background = _background(rng, size)
    objects = _layout(rng, split, size)
    if twin:
        objects = _hard_negative(objects, np.random.default_rng((seed, SPLITS[split], index, 1)), size)
    image = background.copy()
    masks = []
    for obj in objects:
        mask = shape_mask(obj.shape, obj.center, obj.radius, obj.angle, size)
        fill = np.array(obj.rgb, dtype=np.float32) + FILL_NOISE * rng.standard_normal(size=(int(mask.sum()), 3), dtype=np.float32)
        image[mask] = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
        masks.append(mask)
    return Scene(
        image=image,
        background=background,
        masks=np.stack(masks),
        objects=tuple(objects),
        split=split,
        index=index,
        seed=seed,
        twin=twin,
    )


def make_scenes(count: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + count − 1`` of ``split`` (see :func:`make_scene`)."""
    return [make_scene(i, split, seed, size) for i in range(start, start + count)]
