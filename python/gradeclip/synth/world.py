"""The synthetic world's vocabulary: colours, shapes, sizes, regions, and the held-out split.

Everything a scene or a caption can say is named here. The held-out split is a set of
colour–shape pairs that never appear in a ``"train"`` or ``"val"`` scene; every colour and every
shape still appears in training with the other shapes and colours.
"""

from __future__ import annotations

#: object colours: name → base RGB (objects get a small per-object jitter around it)
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (250, 140, 10),
    "yellow": (245, 225, 20),
    "green": (30, 170, 50),
    "cyan": (30, 210, 230),
    "blue": (30, 60, 225),
    "purple": (135, 40, 200),
    "pink": (250, 110, 200),
}

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "cross", "diamond", "hexagon", "heart")

#: size class → radius range as a fraction of the image side (the shape fits in a circle of that radius)
SIZES: dict[str, tuple[float, float]] = {"small": (0.12, 0.15), "large": (0.22, 0.27)}

#: the image quadrant an object's centre lies in, with the phrase a caption uses. Object centres
#: keep REGION_MARGIN (a fraction of the side) away from the midlines, so every object's quadrant
#: is clear from the image (with 3×3 cells, objects as large as a cell straddled boundaries and
#: their region words were a coin flip)
REGIONS: tuple[tuple[str, str], ...] = (
    ("top left", "in the top left"),
    ("top right", "in the top right"),
    ("bottom left", "in the bottom left"),
    ("bottom right", "in the bottom right"),
)
REGION_MARGIN = 0.05
REGION_PHRASE: dict[str, str] = dict(REGIONS)

#: colour–shape pairs held out of training: colour i goes with shape (3·i + 1) mod 8, so each
#: colour and each shape is held out exactly once
HELD_OUT: frozenset[tuple[str, str]] = frozenset(
    (colour, SHAPES[(3 * i + 1) % len(SHAPES)]) for i, colour in enumerate(COLOURS)
)
ALL_PAIRS: tuple[tuple[str, str], ...] = tuple((c, s) for c in COLOURS for s in SHAPES)
TRAIN_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p not in HELD_OUT)
HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(p for p in ALL_PAIRS if p in HELD_OUT)

#: scene splits: ``train`` and ``val`` use only training pairs (disjoint seed streams); every
#: ``test`` scene has at least one held-out pair (its other objects may use any pair)
SPLITS: dict[str, int] = {"train": 0, "val": 1, "test": 2}


def region_of(x: float, y: float, size: int) -> str:
    """The quadrant name of a point ``(x, y)`` (pixels, x to the right, y down) in a ``size``-px image."""
    return REGIONS[2 * int(y >= size / 2) + int(x >= size / 2)][0]


def clear_of_midlines(x: float, y: float, size: int) -> bool:
    """Whether ``(x, y)`` keeps at least ``REGION_MARGIN · size`` from both midlines."""
    margin = REGION_MARGIN * size
    return abs(x - size / 2) >= margin and abs(y - size / 2) >= margin
