"""Seeded procedural scenes: a textured background and 1–4 non-overlapping shapes with exact masks.

Scene ``index`` of split ``split`` under ``seed`` is a pure function of those three numbers
(``numpy.random.default_rng((seed, split_id, index))``), so any scene can be drawn again on its own,
in any order, on any machine with the same numpy and Pillow.

Objects never overlap, and each is drawn without anti-aliasing, so its mask is exactly the set of
pixels painted in its colour; every other pixel is the background.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from ..errors import InputError
from .world import COLOURS, HELD_OUT_PAIRS, SIZES, SPLITS, TRAIN_PAIRS, ALL_PAIRS, region_of

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
        split, index, seed: where the scene comes from (draw it again with :func:`make_scene`).
    """

    image: np.ndarray
    background: np.ndarray
    masks: np.ndarray
    objects: tuple[SceneObject, ...]
    split: str
    index: int
    seed: int

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


def make_scene(index: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE) -> Scene:
    """Draw scene ``index`` of ``split`` (``"train"``, ``"val"``, ``"test"``) under ``seed``.

    ``train``/``val`` scenes use only training colour–shape pairs; a ``test`` scene's first object
    is a held-out pair and its others use any pair. 1–4 objects (fewer when one cannot be placed
    without overlapping the others), each small or large, rotated by up to ±15°.

    Returns:
        :class:`Scene` with a ``[size, size, 3]`` uint8 image and ``[K, size, size]`` bool masks.
    """
    if size < 32:
        raise InputError(f"scene size must be at least 32 px, got {size}")
    rng = _rng(seed, split, index)
    background = _background(rng, size)
    image = background.copy()
    n = int(rng.integers(1, MAX_OBJECTS + 1))
    objects: list[SceneObject] = []
    masks: list[np.ndarray] = []
    placed: list[tuple[float, float, float]] = []
    for k in range(n):
        pool = HELD_OUT_PAIRS if (split == "test" and k == 0) else (ALL_PAIRS if split == "test" else TRAIN_PAIRS)
        colour, shape = pool[int(rng.integers(len(pool)))]
        size_name = ("small", "large")[int(rng.integers(2))]
        lo, hi = SIZES[size_name]
        radius = float(rng.uniform(lo, hi) * size)
        angle = 0.0 if shape == "circle" else float(rng.uniform(-15, 15))
        for _ in range(PLACEMENT_TRIES):
            cx, cy = (float(v) for v in rng.uniform(radius + 1, size - radius - 1, size=2))
            if all(math.hypot(cx - px, cy - py) > radius + pr + 2 for px, py, pr in placed):
                break
        else:
            continue  # no room left: the scene keeps the objects already placed
        mask = shape_mask(shape, (cx, cy), radius, angle, size)
        jitter = rng.integers(-COLOUR_JITTER, COLOUR_JITTER + 1, size=3)
        rgb = tuple(int(v) for v in np.clip(np.array(COLOURS[colour]) + jitter, 0, 255))
        fill = np.array(rgb, dtype=np.float32) + FILL_NOISE * rng.standard_normal(size=(int(mask.sum()), 3), dtype=np.float32)
        image[mask] = np.clip(np.rint(fill), 0, 255).astype(np.uint8)
        placed.append((cx, cy, radius))
        masks.append(mask)
        objects.append(SceneObject(colour, shape, size_name, region_of(cx, cy, size), (cx, cy), radius, angle, rgb))  # type: ignore[arg-type]
    return Scene(
        image=image,
        background=background,
        masks=np.stack(masks) if masks else np.zeros((0, size, size), dtype=bool),
        objects=tuple(objects),
        split=split,
        index=index,
        seed=seed,
    )


def make_scenes(count: int, split: str = "train", seed: int = 0, size: int = DEFAULT_SIZE, start: int = 0) -> list[Scene]:
    """Scenes ``start .. start + count − 1`` of ``split`` (see :func:`make_scene`)."""
    return [make_scene(i, split, seed, size) for i in range(start, start + count)]
